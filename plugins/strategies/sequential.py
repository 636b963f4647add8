"""Sequential fine-tuning: train on each experience in turn, with no protection against forgetting."""

import numpy as np

from ssl_bench import hookimpl
from ssl_bench.api import Strategy

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"


class Sequential(Strategy):
    """One phase per experience; everything else is the base class's default."""

    name = "sequential"

    def setup(self, run):
        self.steps = [p.steps for p in run.phases]

    def record(self):
        return {"steps_per_experience": np.asarray(self.steps, np.int64)}


@hookimpl
def ssl_bench_strategies():
    return {"sequential": Sequential}
