"""Joint training: all experiences' data at once, the upper bound of a stream.

Compute-matched: the single phase gets as many optimisation steps as the sequential run
takes over all experiences together, so the comparison is fair.
"""

import numpy as np

from ssl_bench import hookimpl
from ssl_bench.api import Phase, Strategy

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"


class Joint(Strategy):
    name = "joint"

    def plan(self, experiences, steps):
        self.sequential_steps = list(steps)
        return [Phase(name="joint", experiences=[e.index for e in experiences], steps=sum(steps))]

    def record(self):
        # the steps the sequential run would give each experience; the joint phase takes their sum
        return {"compute_matched": 1, "sequential_steps_per_experience": np.asarray(self.sequential_steps, np.int64)}


@hookimpl
def ssl_bench_strategies():
    return {"joint": Joint}
