"""PFR: projected functional regularization, the current backbone's features projected onto the previous model's.

Gomez-Villa, Twardowski, Yu, Bagdanov & van de Weijer, Continually Learning Self-Supervised Representations
with Projected Functional Regularization, CVPR Workshops (CLVision) 2022 (the authors' code builds on CaSSLe's).

From the second phase on, with ``h = f_t(x)`` the current backbone's features of a view, ``h_old =
f_{t-1}(x)`` those of the frozen backbone from the end of the previous phase, and ``g`` a temporal
projector trained with the model (``Linear(D, D // 2) - BN - ReLU - Linear(D // 2, D)``, both linears with a
bias, ``D`` the backbone's feature width, as in the authors' code: alviur/CVPR_PFR,
``cassle/distillers/pfr.py``, ``distill_predictor`` at commit b95f701; another revision there sizes the hidden
layer by ``--distill_proj_hidden_dim``, 2048), the loss added to the method's is the paper's projected
functional regularizer with a cosine similarity

    L_PFR = weight * mean_views( -mean_i cos(g(h_i), h_old_i) )

over the first two views (the global crops of a multi-crop method). Unlike CaSSLe it regularises the
backbone's features, not the projector's output, and needs no knowledge of the method's loss.
Defaults: ``weight`` 1 (the authors' ``distill_lamb``), ``hidden`` ``D // 2`` (0.1.0: 256, without the first
linear's bias).

Where this differs: the current backbone's features are computed again for the regularizer (the
strategy cannot see inside the method's loss), so a step costs one more backbone forward and backward
per distilled view than in the reference, which reuses the training step's features; the value is the same.

The frozen model is :class:`ssl_bench.blocks.distill.FrozenModel`, shared with CaSSLe: a copy run in training
mode (batch statistics, as the reference never switches it to eval) whose running statistics never move.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.blocks.distill import FrozenDistillation
from ssl_bench.errors import UserError

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = (
    "Gomez-Villa et al., Continually Learning Self-Supervised Representations with Projected Functional "
    "Regularization, CVPR Workshops 2022"
)


class PFR(FrozenDistillation):
    """Projected functional regularization: ``weight`` of the loss, ``hidden`` width of the temporal projector."""

    name = "pfr"

    def __init__(self, weight: float = 1.0, hidden: int | None = None):
        if not isinstance(weight, (int, float)) or weight < 0:
            raise UserError(f"pfr: weight must be >= 0, got {weight!r}")
        if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
            raise UserError(f"pfr: hidden must be a positive integer (or unset: the feature width // 2), got {hidden!r}")
        super().__init__()
        self.weight, self.hidden = float(weight), hidden

    def make_head(self, run) -> nn.Module:
        d = run.method.feature_dim
        hidden = self.hidden if self.hidden is not None else max(1, d // 2)
        return nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d))

    def distill(self, run, views):
        assert self.head is not None
        terms = []
        for v in views:
            old = self.frozen(lambda model, v=v: model.backbone(v))
            terms.append(-F.cosine_similarity(self.head(run.method.backbone(v)), old, dim=1).mean())
        return sum(terms) / len(terms)


@hookimpl
def ssl_bench_strategies():
    return {"pfr": PFR}
