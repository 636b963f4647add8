"""BYOL: bootstrap your own latent, an online network predicting a slow-moving target network.

Grill et al., Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning, NeurIPS 2020.

Defaults from the paper: projector and predictor are MLPs Linear-BN-ReLU-Linear with 4096 hidden
units and a 256-d output; the target network (backbone + projector) is an exponential moving
average of the online one with momentum tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2,
tau_base = 0.996, rising to 1 at the end of the run (k / K is the run's progress). The loss is the
symmetrised normalised MSE, 2 - 2 cos(prediction, target projection), summed over both directions.
The paper's asymmetric views are the ``byol`` augmentation recipe of the protocol.
"""

import torch
import torch.nn.functional as F

from ssl_bench import hookimpl
from ssl_bench.api import Method
from ssl_bench.blocks.heads import cosine_momentum, ema_update, frozen_copy, mlp, online_and_target
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Grill et al., Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning, NeurIPS 2020"


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``2 - 2 cos(p, z)`` (the squared distance of the L2-normalised vectors)."""
    return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()


class BYOL(Method):
    #: solo-learn's cifar/byol.yaml (LARS lr 1.0, wd 1e-5, eta 0.02 with clipping, tau 0.99 -> 1); cpu: heads scaled
    #: to the x0.25 backbone and tuned for the short budget (benchmark/RESULTS.md)
    recipes = {
        "smoke": {
            "extends": ["solo-lars", "smoke-phase"],
            "lr": 1.0,
            "weight_decay": 1e-05,
            "options": {"proj_hidden": 512, "pred_hidden": 512, "base_momentum": 0.99},
        },
        "cpu": {
            "extends": ["solo-lars", "cpu-phase"],
            "lr": 1.0,
            "weight_decay": 1e-05,
            "options": {"proj_hidden": 1024, "proj_dim": 256, "pred_hidden": 1024, "base_momentum": 0.99},
        },
        "s3l": {"extends": ["solo-lars", "s3l-phase"], "lr": 1.0, "weight_decay": 1e-05, "options": {"base_momentum": 0.99}},
    }
    distillation = "predictive"  # CaSSLe's distiller for this kind of method (ssl_bench.blocks.distill)

    def __init__(
        self,
        backbone,
        proj_hidden: int = 4096,
        proj_dim: int = 256,
        pred_hidden: int = 4096,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
    ):
        super().__init__(backbone)
        if not 0 <= base_momentum <= final_momentum <= 1:
            raise UserError("byol: need 0 <= base_momentum <= final_momentum <= 1")
        self.base_momentum, self.final_momentum = base_momentum, final_momentum
        self.projector = mlp(self.feature_dim, proj_hidden, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim)
        self.target_backbone = frozen_copy(backbone)
        self.target_projector = frozen_copy(self.projector)

    def loss(self, views, labels):
        online, target = (self.backbone, self.projector, self.predictor), (self.target_backbone, self.target_projector)
        (p1, p2), (t1, t2) = online_and_target(views[:2], online, target)
        return byol_loss(p1, t2) + byol_loss(p2, t1)

    def momentum_at(self, progress: float) -> float:
        """The paper's cosine schedule from ``base_momentum`` (progress 0) to ``final_momentum`` (progress 1)."""
        return cosine_momentum(self.base_momentum, self.final_momentum, progress)

    @torch.no_grad()
    def after_step(self, progress):
        ema_update([self.target_backbone, self.target_projector], [self.backbone, self.projector], self.momentum_at(progress))


@hookimpl
def ssl_bench_methods():
    return {"byol": BYOL}
