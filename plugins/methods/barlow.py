"""Barlow Twins: make the cross-correlation matrix of two views' embeddings close to the identity.

Zbontar, Jing, Misra, LeCun & Deny, Barlow Twins: Self-Supervised Learning via Redundancy Reduction, ICML 2021.

Defaults from the paper: a 3-layer projector with 8192 units per layer (Linear-BN-ReLU twice, then a
Linear), lambda = 5e-3 (the paper's 0.0051) weighting the off-diagonal (redundancy reduction) term.
The embeddings are standardised along the batch (BatchNorm without affine parameters) before the
cross-correlation C = z1^T z2 / N; the loss is s (sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2) with
``scale_loss`` s = 1 by default (the paper's equation). The paper's code instead trains biases and
BatchNorm parameters at 1/40 of the weights' learning rate; solo-learn scales the loss (0.025 by default,
0.1 in its CIFAR configs), which with LARS (biases and norms excluded from its adaptation) does the same.
The shipped ``cpu`` and ``s3l`` recipes follow solo-learn's CIFAR config (s = 0.1): without it, the
excluded parameters take 10x larger steps and Barlow Twins collapsed on ``tinyimagenet-cpu``
(benchmark/RESULTS.md).
The 8192-wide projector is heavy on a CPU: ``--method-opt proj_hidden=2048 proj_dim=2048`` for small runs.
"""

import torch
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Zbontar et al., Barlow Twins: Self-Supervised Learning via Redundancy Reduction, ICML 2021"


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit (biased) variance along the batch, as BatchNorm1d(affine=False) in training mode."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def barlow_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, scale: float = 1.0) -> torch.Tensor:
    n, d = z1.shape
    c = standardize(z1.float()).t() @ standardize(z2.float()) / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return scale * (on_diag + lambd * off_diag)


class BarlowTwins(Method):
    #: solo-learn's cifar/barlow.yaml (LARS lr 0.3, wd 1e-4, eta 0.02 with clipping, projector 2048); cpu: 1024
    recipes = {
        "smoke": {"extends": ["solo-lars-cifar", "smoke-phase"], "options": {"proj_hidden": 512, "proj_dim": 512}},
        "cpu": {
            "extends": ["solo-lars-cifar", "cpu-phase"],
            "options": {"proj_hidden": 1024, "proj_dim": 1024, "scale_loss": 0.1},
        },
        "s3l": {
            "extends": ["solo-lars-cifar", "s3l-phase"],
            "options": {"proj_hidden": 2048, "proj_dim": 2048, "scale_loss": 0.1},
        },
    }
    distillation = "decorrelative"  # CaSSLe's distiller for this kind of method (ssl_bench.blocks.distill)

    def __init__(self, backbone, proj_hidden: int = 8192, proj_dim: int = 8192, lambd: float = 0.0051, scale_loss: float = 1.0):
        super().__init__(backbone)
        if scale_loss <= 0:
            raise UserError(f"barlow: scale_loss must be positive, got {scale_loss}")
        self.lambd, self.scale_loss = lambd, scale_loss
        self.projector = nn.Sequential(
            nn.Linear(self.feature_dim, proj_hidden, bias=False),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_hidden, bias=False),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_dim, bias=False),
        )

    def loss(self, views, labels):
        z1, z2 = (self.projector(self.backbone(v)) for v in views[:2])
        return barlow_loss(z1, z2, self.lambd, self.scale_loss)


@hookimpl
def ssl_bench_methods():
    return {"barlow": BarlowTwins}
