"""Hybrid continual + multi-epoch training (Li, Efros, Pathak, ECCV 2022).

Li, Efros & Pathak, Understanding Collapse in Non-Contrastive Siamese Representation Learning, ECCV 2022.

A continual pass through the stream (one phase per experience, as sequential training),
followed by one multi-epoch phase on all the data accumulated so far. Li et al. found that
continual training regularises against partial dimensional collapse and that such a hybrid
beats either schedule alone.

Budget: ``budget`` is the total number of steps relative to the sequential run (1.0 =
compute-matched with ``sequential`` and ``joint``); ``share`` of it goes to the final
multi-epoch phase, the rest is split over the continual phases in proportion to each
experience's steps. With the defaults (``share = 0.5``, ``budget = 1.0``) every experience
gets half its sequential steps and the final phase the other half of the budget.
"""

from __future__ import annotations

import numpy as np

from ssl_bench import hookimpl
from ssl_bench.api import Phase, Strategy
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Li, Efros, Pathak, Understanding Collapse in Non-Contrastive Siamese Representation Learning, ECCV 2022"


class Hybrid(Strategy):
    name = "hybrid"

    def __init__(self, share: float = 0.5, budget: float = 1.0):
        if not isinstance(share, (int, float)) or not 0 < share < 1:
            raise UserError(f"hybrid: share (of the steps spent in the final multi-epoch phase) must be in (0, 1), got {share!r}")
        if not isinstance(budget, (int, float)) or budget <= 0:
            raise UserError(f"hybrid: budget (total steps relative to sequential) must be > 0, got {budget!r}")
        self.share, self.budget = float(share), float(budget)
        self.steps: list[int] = []

    def plan(self, experiences, steps):
        total = round(sum(steps) * self.budget)
        final = max(1, round(total * self.share))
        continual = [max(1, round(s * (total - final) / sum(steps))) for s in steps]
        phases = [Phase(name=f"experience {e.index}", experiences=[e.index], steps=s) for e, s in zip(experiences, continual)]
        phases.append(Phase(name="multi-epoch", experiences=[e.index for e in experiences], steps=final))
        self.steps = [p.steps for p in phases]
        return phases

    def record(self):
        return {"share": self.share, "budget": self.budget, "steps_per_phase": np.asarray(self.steps, np.int64)}


@hookimpl
def ssl_bench_strategies():
    return {"hybrid": Hybrid}
