"""SimSiam: Siamese networks with a predictor and a stop-gradient, no negatives and no momentum encoder.

Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021.

Defaults from the paper (ImageNet): a 3-layer projector (2048 hidden and output units, BatchNorm on
every layer including the output, no ReLU after the output) and a bottleneck predictor
2048 -> 512 -> 2048 (BatchNorm + ReLU on the hidden layer only). The loss is the symmetrised
negative cosine similarity with a stop-gradient on the target branch, in [-1, 1].
The paper keeps the predictor's learning rate fixed: :meth:`fixed_lr_parameters` names it, so it trains
at the recipe's peak learning rate throughout. SimSiam can collapse (partially) when the
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
    #: solo-learn's cifar/simsiam.yaml (SGD lr 0.5, wd 1e-5) with the paper's fixed predictor lr; cpu: heads scaled
    recipes = {
        "smoke": {"extends": "sgd-smoke", "options": {"proj_hidden": 512, "proj_dim": 512, "pred_hidden": 128}},
        "cpu": {
            "optimizer": "sgd",
            "lr": 0.5,
            "weight_decay": 1e-05,
            "warmup_epochs": 0.4,
            "options": {"proj_hidden": 1024, "proj_dim": 1024, "pred_hidden": 256},
        },
        "s3l": {
            "optimizer": "sgd",
            "lr": 0.5,
            "weight_decay": 1e-05,
            "warmup_epochs": 2,
            "options": {"proj_hidden": 2048, "proj_dim": 2048, "pred_hidden": 512},
        },
    }
    distillation = "predictive"  # CaSSLe's distiller for this kind of method (ssl_bench.blocks.distill)

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

    def fixed_lr_parameters(self):
        """The paper's predictor keeps a fixed learning rate ("fix lr for predictor", Chen & He, Sec. 4.2)."""
        return [f"predictor.{n}" for n, _ in self.predictor.named_parameters()]

    def loss(self, views, labels):
        z1, z2 = (self.projector(self.backbone(v)) for v in views[:2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return (neg_cosine(p1, z2) + neg_cosine(p2, z1)) / 2


@hookimpl
def ssl_bench_methods():
    return {"simsiam": SimSiam}
