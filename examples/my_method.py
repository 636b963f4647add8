"""An out-of-tree ssl-bench plugin: Alignment + Uniformity (Wang & Isola, ICML 2020).

Run it with:  ssl-bench run --plugin examples/my_method.py
The whole contract is here: metadata, a Method subclass, and one hook returning it by name.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method

__version__ = "0.1.0"
__license__ = "MIT"
__paper__ = "Wang & Isola, Understanding Contrastive Representation Learning through Alignment and Uniformity, ICML 2020"


class AlignUniform(Method):
    """Pull two views of an image together (alignment) and spread all embeddings on the sphere (uniformity)."""

    def __init__(self, backbone, proj_dim: int = 128, alpha: float = 2.0, t: float = 2.0, weight: float = 1.0):
        super().__init__(backbone)
        self.alpha, self.t, self.weight = alpha, t, weight
        self.projector = nn.Sequential(nn.Linear(self.feature_dim, 512), nn.ReLU(inplace=True), nn.Linear(512, proj_dim))

    def loss(self, views, labels):
        z1, z2 = (F.normalize(self.projector(self.backbone(v)), dim=1) for v in views)
        align = (z1 - z2).norm(dim=1).pow(self.alpha).mean()
        uniform = sum(torch.pdist(z).pow(2).mul(-self.t).exp().mean().log() for z in (z1, z2)) / 2
        return align + self.weight * uniform


@hookimpl
def ssl_bench_methods():
    return {"align-uniform": AlignUniform}
