"""SimSiam: Siamese networks with a predictor and a stop-gradient, no negatives and no momentum encoder.

Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021.

Defaults from the paper (ImageNet): a 3-layer projector (2048 hidden and output units, BatchNorm on
every layer including the output, no ReLU after the output) and a bottleneck predictor
2048 -> 512 -> 2048 (BatchNorm + ReLU on the hidden layer only). The loss is the symmetrised
negative cosine similarity with a stop-gradient on the target branch, in [-1, 1].
The paper keeps the predictor's learning rate fixed; here the protocol's schedule applies to all
parameters (the harness has one optimiser per protocol). SimSiam can collapse (partially) when the
model is small for the data (Li, Efros & Pathak 2022): watch the collapse evaluator.
"""

import torch.nn.functional as F
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021"


def neg_cosine(p, z):
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), averaged over the batch."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


class SimSiam(Method):
    distillation = "predictive"  # CaSSLe's distiller for this kind of method (ssl_bench.distill)

    def __init__(self, backbone, proj_hidden: int = 2048, proj_dim: int = 2048, pred_hidden: int = 512):
        super().__init__(backbone)
        d = self.feature_dim
        self.projector = nn.Sequential(
            nn.Linear(d, proj_hidden, bias=False),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_hidden, bias=False),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_dim, bias=False),
            nn.BatchNorm1d(proj_dim, affine=False),
        )
        self.predictor = nn.Sequential(
            nn.Linear(proj_dim, pred_hidden, bias=False),
            nn.BatchNorm1d(pred_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(pred_hidden, proj_dim),
        )

    def loss(self, views, labels):
        z1, z2 = (self.projector(self.backbone(v)) for v in views[:2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return (neg_cosine(p1, z2) + neg_cosine(p2, z1)) / 2


@hookimpl
def ssl_bench_methods():
    return {"simsiam": SimSiam}
