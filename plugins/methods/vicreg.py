"""VICReg: variance-invariance-covariance regularisation of two views' embeddings.

Bardes, Ponce & LeCun, VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning, ICLR 2022.

Defaults from the paper: a 3-layer expander with 8192 units per layer (Linear-BN-ReLU twice, then a
Linear); loss = lambda * invariance + mu * variance + nu * covariance with lambda = mu = 25, nu = 1:
invariance is the mean squared error between the two embeddings, variance the mean over dimensions
of max(0, 1 - sqrt(Var + 1e-4)) for each view, covariance the sum of squared off-diagonal entries of
each view's covariance matrix divided by the dimension. The 8192-wide expander is heavy on a CPU:
``--method-opt proj_hidden=2048 proj_dim=2048`` for small runs.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Bardes et al., VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning, ICLR 2022"


def _off_diagonal_sq(c: torch.Tensor) -> torch.Tensor:
    return c.pow(2).sum() - torch.diagonal(c).pow(2).sum()


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """The three unweighted terms of the VICReg loss."""
    n, d = z1.shape
    z1, z2 = z1.float(), z2.float()
    invariance = F.mse_loss(z1, z2)
    variance = sum(F.relu(1 - torch.sqrt(z.var(0) + eps)).mean() for z in (z1, z2)) / 2
    covariance = 0
    for z in (z1, z2):
        zc = z - z.mean(0)
        covariance = covariance + _off_diagonal_sq(zc.t() @ zc / (n - 1)) / d
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


class VICReg(Method):
    #: solo-learn's cifar/vicreg.yaml (LARS lr 0.3, wd 1e-4, eta 0.02 with clipping, expander 2048); cpu: 1024
    recipes = {
        "smoke": {"extends": ["solo-lars-cifar", "smoke-phase"], "options": {"proj_hidden": 512, "proj_dim": 512}},
        "cpu": {"extends": ["solo-lars-cifar", "cpu-phase"], "options": {"proj_hidden": 1024, "proj_dim": 1024}},
        "s3l": {"extends": ["solo-lars-cifar", "s3l-phase"], "options": {"proj_hidden": 2048, "proj_dim": 2048}},
    }
    distillation = "predictive_mse"  # CaSSLe's distiller for this kind of method (ssl_bench.blocks.distill)

    def __init__(
        self,
        backbone,
        proj_hidden: int = 8192,
        proj_dim: int = 8192,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
    ):
        super().__init__(backbone)
        self.coeffs = {"invariance": sim_coeff, "variance": std_coeff, "covariance": cov_coeff}
        self.projector = nn.Sequential(
            nn.Linear(self.feature_dim, proj_hidden),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_hidden),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_dim),
        )

    def loss(self, views, labels):
        z1, z2 = (self.projector(self.backbone(v)) for v in views[:2])
        terms = vicreg_terms(z1, z2)
        return sum(self.coeffs[k] * v for k, v in terms.items())


@hookimpl
def ssl_bench_methods():
    return {"vicreg": VICReg}
