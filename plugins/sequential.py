"""Sequential fine-tuning: train on each experience in turn, with no protection against forgetting."""

from ssl_bench import hookimpl
from ssl_bench.api import Strategy

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"


class Sequential(Strategy):
    """One phase per experience; everything else is the base class's default."""

    name = "sequential"


@hookimpl
def ssl_bench_strategies():
    return {"sequential": Sequential}
