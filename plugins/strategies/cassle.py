"""CaSSLe: self-supervised models are continual learners (Fini et al., CVPR 2022).

From the second experience on, a predictor ``g`` (``Linear(d, hidden) - BN - ReLU - Linear(hidden, d)``,
hidden 2048 as in the reference, trained with the model) maps the current model's projections
``z = method.project(x)`` of the two views to the projections ``z_old`` that a FROZEN copy of the
model from the end of the previous phase gives for the same views, and ``weight * L_distill(g(z), z_old)``
is added to the method's loss. As in the reference code (DonkeyShot21/cassle, ``cassle/distillers/``)
the distillation loss follows the method, by the kind it declares in ``Method.distillation``
(:mod:`ssl_bench.blocks.distill`):

* ``contrastive`` (SimCLR, MoCo v2 / v3, NNCLR): with ``P = [g(z^1); g(z^2)]`` and ``Z = [z_old^1; z_old^2]``
  L2-normalised, ``L = 1/2 [CE(P Z^T / tau) + CE(Z P^T / tau)]`` with the same sample and view as the
  positive, ``tau`` = ``temperature`` = 0.2 (the fused contrastive op);
* ``predictive`` (BYOL, SimSiam; here also DINO, SwAV, MAE and the supervised baseline):
  ``L = mean_views (2 - 2 cos(g(z), z_old))``;
* ``decorrelative`` (Barlow Twins): Barlow Twins' loss between ``g(z)`` and ``z_old``, off-diagonal weight
  5e-3, scaled by 0.1;
* ``predictive_mse`` (VICReg): VICReg's invariance term, the mean squared error, with weight 25.

``weight`` defaults to the reference's per kind (1, or 25 for ``predictive_mse``); ``loss`` forces a kind.
Gradients flow into the current model and the predictor, never into the frozen copy. The frozen copy
(:class:`ssl_bench.blocks.distill.FrozenModel`, shared with PFR) runs in training mode, with the statistics of
the batch it sees, as the reference's (a deep copy never switched to eval), and changes no running
statistics.

Where this differs from the reference: its ``knowledge`` distiller (a KL divergence between prototype
assignments, which it uses for SwAV and DeepCluster v2) is not implemented; methods with prototypes
declare ``predictive`` instead. The current model's projections are computed again for the distillation
(the strategy does not see inside the method's loss): one more forward and backward per view than the
reference, the same value.
"""

from __future__ import annotations

from ssl_bench import hookimpl
from ssl_bench.blocks.distill import LOSSES, WEIGHTS, FrozenDistillation, contrastive, distillation_kind
from ssl_bench.blocks.heads import mlp
from ssl_bench.errors import UserError

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "Fini et al., Self-Supervised Models are Continual Learners, CVPR 2022"


class CaSSLe(FrozenDistillation):
    """Predictive distillation to the previous model: ``weight`` (None: the reference's for the loss kind),
    ``hidden`` width of the predictor, ``temperature`` of the contrastive kind, ``loss`` ("auto": the method's)."""

    name = "cassle"

    def __init__(self, weight: float | None = None, hidden: int = 2048, temperature: float = 0.2, loss: str = "auto"):
        if weight is not None and (not isinstance(weight, (int, float)) or weight < 0):
            raise UserError(f"cassle: weight must be >= 0, got {weight!r}")
        if not isinstance(hidden, int) or hidden < 1:
            raise UserError(f"cassle: hidden must be a positive integer, got {hidden!r}")
        if not isinstance(temperature, (int, float)) or temperature <= 0:
            raise UserError(f"cassle: temperature must be > 0, got {temperature!r}")
        if loss != "auto" and loss not in LOSSES:
            raise UserError(f"cassle: loss must be 'auto' or one of {', '.join(LOSSES)}, got {loss!r}")
        super().__init__()
        self.hidden, self.temperature, self.loss_option = hidden, float(temperature), loss
        self.weight_option = None if weight is None else float(weight)
        self.kind = "predictive"

    def setup(self, run):
        self.kind = distillation_kind(run.method) if self.loss_option == "auto" else self.loss_option
        self.weight = WEIGHTS[self.kind] if self.weight_option is None else self.weight_option
        super().setup(run)

    def make_head(self, run):
        dim = self.output_width(run, run.method.project)
        return mlp(dim, self.hidden, dim)

    def distill(self, run, views):
        assert self.head is not None
        p = [self.head(run.method.project(v)) for v in views]
        z = [self.frozen(lambda model, v=v: model.project(v)) for v in views]
        if self.kind == "contrastive":
            return contrastive(p, z, self.temperature)
        return LOSSES[self.kind](p, z)

    def record(self):
        return {**super().record(), "loss": self.kind}


@hookimpl
def ssl_bench_strategies():
    return {"cassle": CaSSLe}
