"""SwAV: swapped prediction of online cluster assignments computed with Sinkhorn-Knopp.

Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments, NeurIPS 2020
(reference code: facebookresearch/swav, ``main_swav.py``).

The projection ``z = normalize(h(f(x)))`` of every view is scored against K prototypes ``c_k``
(L2-normalised rows, renormalised after every step). For a global view ``s`` its codes ``Q_s`` come
from the scores ``C^T Z_s`` by Sinkhorn-Knopp (Eq. 3-5 of the paper, ``eps`` = 0.05, 3 iterations):

    Q = Diag(u) exp(C^T Z / eps) Diag(v),   Q 1_B = 1_K / K,   Q^T 1_K = 1_B / B   (then scaled by B)

i.e. an equipartition of the batch over the prototypes, each sample's codes summing to 1. Every other
view ``t`` predicts them (the swapped prediction):

    L = 1 / |S| sum_{s in S} 1 / (V - 1) sum_{t != s} -sum_k q_s^(k) log p_t^(k),
    p_t^(k) = softmax_k(z_t^T c_k / tau)

with S = the 2 global views, V all views and ``tau`` = ``temperature`` = 0.1. Paper defaults: projection
MLP 2048 -> 128 with BatchNorm, 3000 prototypes, multi-crop 2 x (0.14, 1) + 6 x (0.05, 0.14) at 96/224
of the global side, prototypes frozen during the first epoch (``freeze_prototypes_epochs``; the
reference counts 313 iterations, one ImageNet epoch at batch 4096), and for small batches a queue of
``queue_length`` past projections per global view (3840 at batch 256, from epoch 15) that is scored
with the batch when computing the codes; off (0) by default, as in the reference's default.

Where this differs from the reference, and why: epoch-counted things (prototype freeze, the epoch the
queue starts) restart with every training phase, and the queue is emptied at each phase start, as each
experience in CaSSLe's code is a fresh training run; the queue receives the batch in
:meth:`after_step` (the reference inserts it right after computing the codes: the same order, but
evaluators that call the loss without stepping leave the queue alone); prototypes are renormalised
after each optimiser step (the reference does it before each forward: the same sequence).

Recipes (``recipes``): "s3l" from solo-learn's ``scripts/pretrain/cifar/swav.yaml`` (ResNet-18 on 32 px:
LARS lr 0.6 at batch 256, weight decay 1e-6, trust 0.02 with clipping, BN/bias excluded, 3000
prototypes, queue 3840 from epoch 50 of 1000, i.e. 5%, prototypes frozen 2 epochs, no local crops);
"cpu" and "smoke" are for a few hundred steps: SimCLR's square-root learning-rate rule for small batches
and short training (lr = 0.075 sqrt(B), 1.2 at batch 256; Chen et al. 2020, Appendix B.1), fewer prototypes
for the smaller data, no queue, prototypes frozen for half an epoch at most; checked by
``benchmark/learning_check.py`` (benchmark/RESULTS.md).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method
from ssl_bench.blocks.augment import MultiCrop
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments, NeurIPS 2020"


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x)
    return x


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Codes ``[B, K]`` for scores ``[B, K]``: ``iters`` Sinkhorn-Knopp rounds on ``exp(scores / eps)``.

    Each round scales the prototype marginals to 1/K, then the sample marginals to 1/B; the result is
    multiplied by B so that each sample's codes sum to 1 (and each prototype's to B/K). Under
    torch.distributed the sums run over the batch of all ranks (B = the global batch).
    """
    shift = scores.detach().float().max()  # cancels in the first normalisation; the same on every rank
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp((scores.float() - shift) / eps).t()  # [K, B]
    k = q.shape[0]
    b = q.new_full((), float(q.shape[1]))
    b = _all_reduce(b)
    q /= _all_reduce(q.sum())
    for _ in range(iters):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


def swav_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Swapped prediction: ``codes[s]`` (of view s) predicted from every other view's ``scores`` at ``temperature``."""
    total = scores[0].new_zeros(())
    for s, q in enumerate(codes):
        sub = scores[0].new_zeros(())
        for t, x in enumerate(scores):
            if t != s:
                sub = sub - (q * F.log_softmax(x / temperature, dim=1)).sum(dim=1).mean()
        total = total + sub / (len(scores) - 1)
    return total / len(codes)


class SwAV(Method):
    distillation = "predictive"  # CaSSLe uses its "knowledge" distiller here; not implemented (ssl_bench.blocks.distill)
    recipes = {
        "s3l": {
            "extends": "solo-lars-s3l",
            "lr": 0.6,
            "lr_scaling": "linear",
            "weight_decay": 1e-06,
            "options": {
                "proj_hidden": 2048,
                "proj_dim": 128,
                "n_prototypes": 3000,
                "temperature": 0.1,
                "queue_length": 3840,
                "queue_start_epoch": 2.5,
                "freeze_prototypes_epochs": 2.0,
                "n_local": 0,
            },
        },
        "cpu": {
            "extends": "lars-sqrt",
            "weight_decay": 1e-06,
            "options": {
                "proj_hidden": 1024,
                "proj_dim": 128,
                "n_prototypes": 300,
                "temperature": 0.1,
                "queue_length": 0,
                "freeze_prototypes_epochs": 0.5,
                "n_local": 0,
            },
        },
        "smoke": {
            "extends": "lars-sqrt-smoke",
            "weight_decay": 1e-06,
            "options": {
                "proj_hidden": 512,
                "proj_dim": 128,
                "n_prototypes": 100,
                "temperature": 0.1,
                "queue_length": 0,
                "freeze_prototypes_epochs": 0.0,
                "n_local": 2,
            },
        },
    }

    def __init__(
        self,
        backbone,
        proj_hidden: int = 2048,
        proj_dim: int = 128,
        n_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iters: int = 3,
        freeze_prototypes_epochs: float = 1.0,
        queue_length: int = 0,
        queue_start_epoch: float = 15.0,
        n_local: int = 6,
        local_size: float = 96 / 224,
        global_scale: tuple[float, float] | list[float] = (0.14, 1.0),
        local_scale: tuple[float, float] | list[float] = (0.05, 0.14),
    ):
        super().__init__(backbone)
        if temperature <= 0 or epsilon <= 0 or sinkhorn_iters < 1:
            raise UserError("swav: need temperature > 0, epsilon > 0 and sinkhorn_iters >= 1")
        if min(proj_hidden, proj_dim, n_prototypes) < 1 or queue_length < 0 or n_local < 0:
            raise UserError("swav: need positive head sizes and n_prototypes, queue_length >= 0, n_local >= 0")
        self.temperature, self.epsilon, self.sinkhorn_iters = temperature, epsilon, sinkhorn_iters
        self.freeze_prototypes_epochs, self.queue_start_epoch = freeze_prototypes_epochs, queue_start_epoch
        self.views = MultiCrop(
            n_global=2, n_local=n_local, local_size=local_size, global_scale=tuple(global_scale), local_scale=tuple(local_scale)
        )
        self.projector = nn.Sequential(
            nn.Linear(self.feature_dim, proj_hidden),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_dim),
        )
        self.prototypes = nn.Linear(proj_dim, n_prototypes, bias=False)
        self.normalize_prototypes()
        # per global view, the last queue_length projections (newest first); zeros = empty
        self.register_buffer("queue", torch.zeros(2, queue_length, proj_dim))
        self._phase_step, self._steps_per_epoch = 0, 0
        self._pending: torch.Tensor | None = None
        #: rows pushed into the queue since it was emptied, counted on the host: whether the queue is full is known
        #: without reading it (a read of the GPU's queue would make every step wait)
        self._queued = 0
        self._queue_ready = False  #: whether the loss scores the queue: full, and its start epoch reached
        self.register_load_state_dict_post_hook(lambda module, keys: module._count_queued())

    def _count_queued(self) -> None:
        """Count the rows of a queue loaded from a checkpoint (the rows of a projection are never all zero)."""
        self._queued = int(self.queue[0].ne(0).any(dim=1).sum()) if self.queue.shape[1] else 0
        self._update_queue_ready()

    def _update_queue_ready(self) -> None:
        length = self.queue.shape[1]
        self._queue_ready = length > 0 and self.epoch >= self.queue_start_epoch and self._queued >= length

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    @property
    def epoch(self) -> float:
        """Epochs of the current phase done so far (inf before :meth:`begin_phase`: no freeze, queue allowed)."""
        return self._phase_step / self._steps_per_epoch if self._steps_per_epoch else float("inf")

    def begin_phase(self, steps, steps_per_epoch):
        self._phase_step, self._steps_per_epoch = 0, max(1, steps_per_epoch)
        self.queue.zero_()
        self._queued = 0
        self._update_queue_ready()

    def embed(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """L2-normalised projections per view, running views of one size as one batch (as the reference)."""
        out, start = [], 0
        while start < len(views):
            end = start
            while end < len(views) and views[end].shape[-1] == views[start].shape[-1]:
                end += 1
            z = F.normalize(self.projector(self.backbone(torch.cat(views[start:end]))), dim=1)
            out.extend(z.chunk(end - start))
            start = end
        return out

    def loss(self, views, labels):
        z = self.embed(views)
        scores = [self.prototypes(zi) for zi in z]
        # decided on the host from the step count and the rows queued (a bool that changes at most twice a phase, so
        # ``--compile`` compiles two graphs at most; a number changing every step would make a new one every step)
        use_queue = self._queue_ready
        codes = []
        with torch.no_grad():
            for s in range(self.views.n_global):
                out = scores[s].detach()
                if use_queue:  # score the queue too; keep the codes of the current batch
                    out = torch.cat([self.prototypes(self.queue[s]), out])
                codes.append(sinkhorn(out, self.epsilon, self.sinkhorn_iters)[-len(scores[s]) :])
        if self.training and self.queue.shape[1] > 0:
            self._pending = torch.stack([z[s].detach() for s in range(self.views.n_global)])
        return swav_loss(scores, codes, self.temperature)

    def project(self, x):
        return F.normalize(self.projector(self.backbone(x)), dim=1)

    def after_backward(self):
        if self.epoch < self.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None

    @torch.no_grad()
    def after_step(self, progress):
        self.normalize_prototypes()
        if self._pending is not None:
            if self.epoch >= self.queue_start_epoch:
                new = self._pending[:, : self.queue.shape[1]]
                self.queue.copy_(torch.cat([new, self.queue[:, : self.queue.shape[1] - new.shape[1]]], dim=1))
                self._queued += new.shape[1]
            self._pending = None
        self._phase_step += 1
        self._update_queue_ready()


@hookimpl
def ssl_bench_methods():
    return {"swav": SwAV}
