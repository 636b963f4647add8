"""Supervised baseline: the backbone plus a linear classifier trained with cross-entropy on the labels.

The reference point of the streaming-SSL study (Hu et al., How Well Does Self-Supervised Pre-Training
Perform with Streaming Data?, ICLR 2022): supervised sequential training forgets far more than SSL
under the same protocol, augmentations and budget. One augmented view per image.

``n_classes`` sizes the classifier; the engine passes the dataset's class count (a factory that
declares an ``n_classes`` parameter gets it unless the user sets it).
"""

import torch.nn.functional as F
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"


class Supervised(Method):
    n_views = 1
    uses_labels = True
    #: SGD with momentum, lr 0.1 per 256 images, wd 5e-4, cosine: the standard ResNet recipe for small images
    recipes = {
        "smoke": {"extends": "sgd-smoke"},
        "cpu": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0005, "warmup_epochs": 0.4},
        "s3l": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0005, "warmup_epochs": 2},
    }

    def __init__(self, backbone, n_classes: int, label_smoothing: float = 0.0):
        super().__init__(backbone)
        if n_classes < 2:
            raise UserError(f"supervised: n_classes must be at least 2, got {n_classes}")
        self.n_classes, self.label_smoothing = n_classes, label_smoothing
        self.classifier = nn.Linear(self.feature_dim, n_classes)

    def loss(self, views, labels):
        if labels is None:
            raise UserError("supervised: the method needs labels, but none were given")
        # on the CPU every batch; on a GPU a read of the labels would make every step wait for it: there the engine
        # checks n_classes against the dataset's classes before training
        if labels.device.type == "cpu":
            top = int(labels.max())
            if top >= self.n_classes:
                raise UserError(
                    f"supervised: label {top} >= n_classes={self.n_classes}; set --method-opt n_classes=<number of classes>"
                )
        return F.cross_entropy(self.classifier(self.backbone(views[0])), labels, label_smoothing=self.label_smoothing)


@hookimpl
def ssl_bench_methods():
    return {"supervised": Supervised}
