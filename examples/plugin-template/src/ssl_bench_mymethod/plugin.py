"""MyMethod: a one-line description of the method (shown by `ssl-bench check`).

Replace the loss below with yours. Everything ssl-bench needs is in this file: the metadata
(``__version__``, ``__license__``, ``__paper__``), a :class:`ssl_bench.api.Method` subclass,
and one hook returning it by the name users type after ``--method``.

Import only ssl-bench's public modules: the one list is CONTRIBUTING.md#public-modules (this file needs
``ssl_bench`` for ``hookimpl`` and ``ssl_bench.api`` for ``Method``).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method

__version__ = "0.1.0"  # keep it equal to the package version in pyproject.toml
__license__ = "MIT"
__paper__ = "Author et al., Title of the paper, Venue Year (or 'none' for a new method)"


class MyMethod(Method):
    """Two views, a projector; pull the projections together (negative cosine) and keep every
    dimension's standard deviation above ``gamma`` (VICReg's variance term, Bardes et al. 2022)
    so that the embeddings cannot collapse to a constant.

    Every option must have a default (taken from the paper); users change them with
    ``--method-opt name=value``.
    """

    #: How the method is optimised under each protocol family it serves (the keys are ssl_bench.recipe.Recipe's;
    #: "options" would be this factory's keyword arguments). These are VICReg's small-image setting in solo-learn
    #: (LARS at lr 0.3 for a batch of 256, weight decay 1e-4, clipped; a 0.4-epoch warm-up, then cosine decay on
    #: the CPU protocols' 4-epoch phases; a constant lr on smoke's 2-epoch phases), which ssl-bench's own VICReg
    #: uses: replace them with your paper's, say where they come from, and check that the method learns under
    #: each family (`ssl-bench check --plugin mymethod --protocol P` gives the verdict). A family left out falls
    #: back to the protocol's [recipe] table, with a warning.
    recipes = {
        "smoke": {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-4, "lars_clip": True, "schedule": "constant"},
        "cpu": {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-4, "lars_clip": True, "warmup_epochs": 0.4},
    }

    def __init__(self, backbone, proj_dim: int = 128, gamma: float = 1.0, variance_weight: float = 1.0):
        super().__init__(backbone)
        self.gamma, self.variance_weight = gamma, variance_weight
        self.projector = nn.Sequential(
            nn.Linear(self.feature_dim, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Linear(256, proj_dim)
        )

    def loss(self, views, labels):
        z1, z2 = (self.projector(self.backbone(v)) for v in views)
        invariance = -F.cosine_similarity(z1, z2, dim=1).mean()
        variance = sum(F.relu(self.gamma - torch.sqrt(z.var(dim=0) + 1e-4)).mean() for z in (z1, z2)) / 2
        return invariance + self.variance_weight * variance


@hookimpl
def ssl_bench_methods():
    return {"mymethod": MyMethod}
