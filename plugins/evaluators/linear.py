"""Linear probe: a multinomial logistic regression on frozen features, per experience.

For each experience j, the classifier is trained on the features of j's labelled training
samples and tested on j's held-out samples; after every phase this gives one row of the
accuracy matrix. Features are extracted once per phase by the engine; the classifier
(:func:`ssl_bench.blocks.probes.fit_predict`) is fitted full-batch with L-BFGS on standardised
features (deterministic, no learning rate to tune), with an L2 penalty ``l2 * ||W||^2``. Its
strength is chosen per experience and phase as Kornblith et al. (CVPR 2019) do: from ``l2_grid``,
by accuracy on a seeded ``val_fraction`` of the probe's own training split, or (``select_by = "loss"``, since
0.3.0) by the lowest cross-entropy there, which bf16 features do not flip as they flip accuracy's near-ties
(:func:`ssl_bench.blocks.probes.select_l2`); the probe is then refitted on the whole split. The chosen
values are stored (``linear/l2``, per experience). A fixed ``l2`` skips the selection. The
features are cached by the engine, so a probe costs L-BFGS iterations on a [n, D] matrix, not a
pass through the network.
"""

import numpy as np

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator
from ssl_bench.blocks.probes import check_options, fit_predict, select_l2
from ssl_bench.errors import UserError

__version__ = "0.3.0"  # 0.3.0: select_by (default "accuracy": 0.2.0's numbers)
__license__ = "Apache-2.0"
__paper__ = "Kolesnikov et al., Revisiting Self-Supervised Visual Representation Learning, CVPR 2019"


class LinearProbe(Evaluator):
    name = "linear"
    when = "phase"

    def __init__(
        self,
        l2: float | None = None,
        l2_grid: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
        val_fraction: float = 0.2,
        max_iter: int = 200,
        seed: int = 0,
        solver: str = "lbfgs64",
        select_by: str = "accuracy",
    ):
        if l2 is None and (not l2_grid or any(v < 0 for v in l2_grid)):
            raise UserError(f"linear: l2_grid must list non-negative L2 strengths, got {l2_grid!r}")
        if not 0 < val_fraction < 1:
            raise UserError(f"linear: val_fraction must lie in (0, 1), got {val_fraction!r}")
        check_options("linear", solver, select_by)
        self.l2, self.l2_grid, self.val_fraction, self.max_iter, self.seed = l2, list(l2_grid), val_fraction, max_iter, seed
        self.solver, self.select_by = solver, select_by

    def evaluate(self, run, features, previous):
        acc, chosen = [], []
        for tr, tr_y, te, te_y in zip(features.train, features.train_labels, features.test, features.test_labels):
            l2 = self.l2
            if l2 is None:
                l2, _ = select_l2(
                    tr, tr_y, self.l2_grid, self.val_fraction, self.seed, self.max_iter, self.solver, self.select_by
                )
            pred = fit_predict(tr, tr_y, te, l2, self.max_iter, self.solver)
            acc.append((pred == te_y).double().mean().item())
            chosen.append(l2)
        return {"acc": np.array(acc), "l2": np.array(chosen)}


@hookimpl
def ssl_bench_evaluators():
    return {"linear": LinearProbe}
