"""NNCLR: contrastive learning with each sample's nearest neighbour in a support set as its positive.

Dwibedi et al., With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
Representations, ICCV 2021 (no official code; solo-learn's and lightly's implementations follow the paper).

With ``z_i = normalize(g(f(x_i)))`` the projections and ``p_i = h(z_i)`` the predictor's outputs of two views,
``NN(z, Q) = argmax_{q in Q} z . q`` the nearest neighbour of ``z`` in the support set ``Q`` (a FIFO queue
of past first-view projections), the loss (Eq. 2 of the paper, symmetrised as in its Sec. 3) is

    L = 1/2 [ InfoNCE(NN(z^1), p^2) + InfoNCE(NN(z^2), p^1) ]
    InfoNCE(a, b) = mean_i -log( exp(a_i . b_i / tau) / sum_k exp(a_i . b_k / tau) )     (a, b L2-normalised)

over the batch (of all ranks under DDP; the fused op in one process, :func:`ssl_bench.ops.info_nce`).
No gradient flows through the neighbours. Paper defaults: projector 3 layers (Linear + BN, ReLU between,
hidden 2048, output 256), predictor 2 layers (hidden 4096), temperature 0.1, support set of 98,304.

Nearest-neighbour lookup: one matrix product of the batch against the queue and a row-wise arg-max,
in chunks of ``nn_chunk`` queue rows so the similarity block stays at ``B x nn_chunk`` floats (100 MB
for a 98k queue at batch 256 otherwise). The project's batched ops (``ssl_bench.ops``) do not fit: the
fused contrastive op reduces each similarity row to a sum of exponentials, never an arg-max, so the
lookup is a plain GEMM (BLAS / cuBLAS) plus ``max``, which is already the fast path.

Where this differs: the queue receives the first view's projections in :meth:`after_step` (after the
optimiser step), so evaluators that call the loss without stepping leave it alone.

Recipes (``recipes``): "s3l" from solo-learn's ``scripts/pretrain/cifar/nnclr.yaml`` (ResNet-18, 32 px: LARS
lr 0.4 at batch 256, weight decay 1e-5, trust 0.02 with clipping, BN/bias excluded, temperature 0.2,
queue 65,536); "cpu" and "smoke" are for a few hundred steps: SimCLR's square-root learning-rate rule for
small batches and short training (lr = 0.075 sqrt(B), 1.2 at batch 256; Chen et al. 2020, Appendix B.1), a
queue of a few dozen batches (a queue far larger than the steps taken holds mostly its random initial
entries) and smaller heads; checked by ``benchmark/learning_check.py`` (benchmark/RESULTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method
from ssl_bench.blocks.heads import enqueue_
from ssl_bench.errors import UserError
from ssl_bench.ops import info_nce

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = (
    "Dwibedi et al., With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual "
    "Representations, ICCV 2021"
)


@torch.no_grad()
def nearest_neighbour(z: torch.Tensor, bank: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Rows of ``bank`` with the largest dot product with each row of ``z`` (``[B, D]``), ``chunk`` bank rows at a time."""
    best_val = torch.full((len(z),), float("-inf"), device=z.device, dtype=z.dtype)
    best_idx = torch.zeros(len(z), dtype=torch.long, device=z.device)
    for start in range(0, len(bank), chunk):
        val, idx = (z @ bank[start : start + chunk].t()).max(dim=1)
        better = val > best_val
        best_val = torch.where(better, val, best_val)
        best_idx = torch.where(better, idx + start, best_idx)
    return bank[best_idx]


class NNCLR(Method):
    distillation = "contrastive"  # CaSSLe's distiller for this kind of method (ssl_bench.blocks.distill)
    recipes = {
        "s3l": {
            "extends": "solo-lars-s3l",
            "lr": 0.4,
            "lr_scaling": "linear",
            "weight_decay": 1e-05,
            "options": {"proj_hidden": 2048, "proj_dim": 256, "pred_hidden": 4096, "temperature": 0.2, "queue_size": 65536},
        },
        "cpu": {
            "extends": "lars-sqrt",
            "weight_decay": 1e-05,
            "options": {"proj_hidden": 1024, "proj_dim": 256, "pred_hidden": 1024, "temperature": 0.2, "queue_size": 4096},
        },
        "smoke": {
            "extends": "lars-sqrt-smoke",
            "weight_decay": 1e-05,
            "options": {"proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512, "temperature": 0.2, "queue_size": 512},
        },
    }

    def __init__(
        self,
        backbone,
        proj_hidden: int = 2048,
        proj_dim: int = 256,
        pred_hidden: int = 4096,
        temperature: float = 0.1,
        queue_size: int = 98304,
        nn_chunk: int = 16384,
    ):
        super().__init__(backbone)
        if temperature <= 0 or queue_size < 1 or nn_chunk < 1:
            raise UserError("nnclr: need temperature > 0, queue_size >= 1 and nn_chunk >= 1")
        self.temperature, self.nn_chunk = temperature, nn_chunk
        self.projector = nn.Sequential(
            nn.Linear(self.feature_dim, proj_hidden),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_hidden),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_dim),
            nn.BatchNorm1d(proj_dim),
        )
        self.predictor = nn.Sequential(
            nn.Linear(proj_dim, pred_hidden), nn.BatchNorm1d(pred_hidden), nn.ReLU(inplace=True), nn.Linear(pred_hidden, proj_dim)
        )
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending: torch.Tensor | None = None

    def loss(self, views, labels):
        z1, z2 = (self.projector(self.backbone(v)) for v in views[:2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        z1n, z2n = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        nn1 = nearest_neighbour(z1n.detach(), self.queue, self.nn_chunk)
        nn2 = nearest_neighbour(z2n.detach(), self.queue, self.nn_chunk)
        loss = (info_nce(nn1, p2, self.temperature, symmetric=False) + info_nce(nn2, p1, self.temperature, symmetric=False)) / 2
        self._pending = z1n.detach() if self.training else None
        return loss

    @torch.no_grad()
    def after_step(self, progress):
        if self._pending is not None:
            enqueue_(self.queue, self.queue_ptr, self._pending)
            self._pending = None


@hookimpl
def ssl_bench_methods():
    return {"nnclr": NNCLR}
