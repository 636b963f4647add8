"""MoCo v2: momentum contrast with an MLP head and a queue of negatives.

Chen, Fan, Girshick & He, Improved Baselines with Momentum Contrastive Learning, arXiv:2003.04297, 2020
(building on He et al., Momentum Contrast for Unsupervised Visual Representation Learning, CVPR 2020).

Defaults from the papers: a 2-layer MLP head (hidden 2048, output 128), temperature 0.2, a queue of
65,536 keys and a key-encoder momentum of 0.999, held constant (``momentum_schedule="cosine"`` ramps it
to ``final_momentum`` over the schedule as BYOL does; solo-learn's MoCo v2+ ramps 0.99 -> 0.999, the
recipes use that). The loss is the papers' asymmetric one, view 1 as query and view 2 as key
(``symmetric=True`` uses both views as queries, as MoCo v3 does). On one device there is no
shuffling BatchNorm (the papers shuffle keys across GPUs); under DDP the keys of all ranks are enqueued.
The keys of a training-mode loss call are enqueued in ``after_step`` (after the optimiser step), so
evaluators that call the loss without stepping do not change the queue.
"""

import torch
import torch.nn.functional as F

from ssl_bench import hookimpl
from ssl_bench.api import Method
from ssl_bench.blocks.heads import cosine_momentum, ema_update, enqueue_, frozen_copy, mlp
from ssl_bench.errors import UserError
from ssl_bench.ops import moco_info_nce

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Chen et al., Improved Baselines with Momentum Contrastive Learning, arXiv:2003.04297, 2020"


class MoCo(Method):
    #: solo-learn's cifar/mocov2plus.yaml (SGD lr 0.3, wd 1e-4, temperature 0.2, key-encoder momentum 0.99 -> 0.999 by a
    #: cosine), with the queue and head scaled to the data and backbone (cpu: 4096 keys, head 512 -> 128)
    recipes = {
        "smoke": {"extends": "sgd-smoke", "options": {"queue_size": 1024, "momentum": 0.99}},
        "cpu": {
            "optimizer": "sgd",
            "lr": 0.3,
            "weight_decay": 0.0001,
            "warmup_epochs": 0.4,
            "options": {
                "temperature": 0.2,
                "proj_hidden": 512,
                "proj_dim": 128,
                "queue_size": 4096,
                "momentum": 0.99,
                "momentum_schedule": "cosine",
                "final_momentum": 0.999,
            },
        },
        "s3l": {
            "optimizer": "sgd",
            "lr": 0.3,
            "weight_decay": 0.0001,
            "warmup_epochs": 2,
            "options": {
                "temperature": 0.2,
                "proj_hidden": 2048,
                "proj_dim": 256,
                "queue_size": 32768,
                "momentum": 0.99,
                "momentum_schedule": "cosine",
                "final_momentum": 0.999,
            },
        },
    }
    distillation = "contrastive"  # CaSSLe's distiller for this kind of method (ssl_bench.blocks.distill)

    def __init__(
        self,
        backbone,
        proj_hidden: int = 2048,
        proj_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 65536,
        momentum: float = 0.999,
        momentum_schedule: str = "constant",
        symmetric: bool = False,
        final_momentum: float = 1.0,
    ):
        super().__init__(backbone)
        if momentum_schedule not in ("constant", "cosine"):
            raise UserError(f"moco: momentum_schedule must be 'constant' or 'cosine', got '{momentum_schedule}'")
        if not 0 <= momentum <= final_momentum <= 1 or queue_size < 1 or temperature <= 0:
            raise UserError("moco: need 0 <= momentum <= final_momentum <= 1, queue_size >= 1 and temperature > 0")
        self.temperature, self.base_momentum, self.final_momentum = temperature, momentum, final_momentum
        self.momentum_schedule, self.symmetric = momentum_schedule, symmetric
        self.projector = mlp(self.feature_dim, proj_hidden, proj_dim, batch_norm=False)
        self.key_backbone = frozen_copy(backbone)
        self.key_projector = frozen_copy(self.projector)
        # buffers, so that the queue is checkpointed and moved to the device with the method
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending = None  #: keys of the last training batch, enqueued by after_step

    @torch.no_grad()
    def _keys(self, x):
        return F.normalize(self.key_projector(self.key_backbone(x)), dim=1)

    def loss(self, views, labels):
        v1, v2 = views[0], views[1]
        q1 = self.projector(self.backbone(v1))
        k2 = self._keys(v2)
        queue = self.queue
        loss = moco_info_nce(q1, k2, queue, self.temperature)
        keys = [k2]
        if self.symmetric:
            q2 = self.projector(self.backbone(v2))
            k1 = self._keys(v1)
            loss = (loss + moco_info_nce(q2, k1, queue, self.temperature)) / 2
            keys.append(k1)
        # enqueued after the optimiser step, so the queue is not changed under a pending backward
        self._pending = torch.cat(keys) if self.training else None
        return loss

    def momentum_at(self, progress: float) -> float:
        if self.momentum_schedule == "constant":
            return self.base_momentum
        return cosine_momentum(self.base_momentum, self.final_momentum, progress)

    @torch.no_grad()
    def after_step(self, progress):
        ema_update([self.key_backbone, self.key_projector], [self.backbone, self.projector], self.momentum_at(progress))
        if self._pending is not None:
            enqueue_(self.queue, self.queue_ptr, self._pending)
            self._pending = None


@hookimpl
def ssl_bench_methods():
    return {"moco": MoCo}
