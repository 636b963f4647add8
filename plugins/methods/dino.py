"""DINO: self-distillation with no labels, a student matching a momentum teacher's centred, sharpened output.

Caron et al., Emerging Properties in Self-Supervised Vision Transformers, ICCV 2021
(reference code: facebookresearch/dino, ``main_dino.py``).

Student ``g_s`` and teacher ``g_t`` are each a backbone followed by the DINO head: an MLP
(``in -> hidden -> hidden -> bottleneck``, GELU, BatchNorm only with ``use_bn``), L2 normalisation, and a
weight-normalised linear layer to ``out_dim`` outputs without bias whose norm is fixed to 1
(``norm_last_layer``). With ``x_1, x_2`` the global crops and ``x_3 ... x_V`` the local ones, the
loss is (Eq. 3 of the paper)

    L = 1 / n_pairs * sum_{i in {1, 2}} sum_{v != i} H(P_t(x_i), P_s(x_v)),     H(a, b) = -sum_k a_k log b_k

    P_s(x) = softmax(g_s(x) / tau_s),     P_t(x) = softmax((g_t(x) - c) / tau_t)

where the teacher sees the global crops only, ``c`` is the centre, updated after every step with the
batch mean of the teacher's outputs ``c <- m c + (1 - m) mean_b g_t(x_b)`` (m = ``center_momentum``
= 0.9), and the teacher's parameters follow the student's by EMA, ``theta_t <- lambda theta_t + (1 -
lambda) theta_s`` with ``lambda`` rising from ``momentum`` = 0.996 to 1 on a cosine over the run.

Paper defaults: ``out_dim`` 65536, ``hidden`` 2048, ``bottleneck`` 256, no BatchNorm in the head,
``student_temp`` 0.1, teacher temperature linearly warmed up from 0.04 to 0.07 over the first 30
epochs (``warmup_teacher_temp``, ``teacher_temp``, ``warmup_teacher_temp_epochs``), the last layer frozen
during the first epoch (``freeze_last_layer`` = 1 epoch), per-parameter gradient-norm clipping at 3.0
(``clip_grad``; 0 disables), multi-crop with 2 global crops of scale (0.4, 1) and ``n_local`` = 8 local
crops of scale (0.05, 0.4) at 96/224 of the global side (the reference's defaults). Without local
crops the global scale becomes (0.14, 1), as the reference recommends when multi-crop is off.

Where this differs from the reference, and why:

* Epoch-counted schedules (teacher-temperature warm-up, last-layer freeze) restart with every training
  phase, as each experience of CaSSLe's code (which continual SSL follows) is a fresh training run; the
  teacher momentum follows ``after_step``'s progress like the other momentum methods here.
* The weight decay is the recipe's constant one; the reference raises it from 0.04 to 0.4 on a cosine.
* The centre is updated in :meth:`after_step` from the last training batch (the reference updates it
  inside the loss); evaluators that call the loss without a step (sharpness, EWC) do not move it.
* The teacher runs in training mode (batch statistics if the head or backbone has BatchNorm), as the
  reference never switches it to eval.

Recipes (``recipes``): "s3l" from solo-learn's ``scripts/pretrain/cifar/dino.yaml`` (ResNet-18 on 32 px:
LARS lr 0.3 at batch 256, weight decay 1e-6, trust 0.02 with clipping, BN/bias excluded, 4096 prototypes,
teacher momentum 0.9995), except the teacher temperature's warm-up from 0.04 to 0.07 over 2.5 epochs, which
is this project's choice after the DINO paper's (over its first 30 epochs): solo-learn's config sets none,
and its default (``warmup_teacher_temperature_epochs``) is 0, the teacher at 0.07 from the start (an
earlier, argparse version of solo-learn defaulted to 50 epochs); "smoke" and "cpu" are for
a few hundred steps: SimCLR's square-root learning-rate rule for small batches and short training
(lr = 0.075 sqrt(B), i.e. 1.2 at batch 256; Chen et al. 2020, Appendix B.1; at solo-learn's 0.3 with
linear scaling the probe did not move in 300 steps), teacher momentum 0.99, a smaller head, warm-ups of
at most an epoch; checked by ``benchmark/learning_check.py`` (benchmark/RESULTS.md). The "cpu" recipe
puts BatchNorm in the head (``use_bn``; solo-learn's ``DINOHead`` has it as an option, off in its configs):
on the ``tinyimagenet-cpu`` protocol's images the small backbone's random-init features point nearly the
same way (mean pairwise cosine 0.76), and without it the head's output became the same for every image
within 10 steps (cosine 0.999, ``benchmark/phase_check.py``), centring then made the teacher uniform and
the loss sat at log(out_dim) for the rest of the run, leaving the backbone below its random init. With
it the head's outputs stay apart; DINO still does not learn at that protocol's budget (RESULTS.md).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method
from ssl_bench.blocks.augment import MultiCrop
from ssl_bench.blocks.heads import cosine_momentum, ema_update, frozen_copy
from ssl_bench.errors import UserError

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "Caron et al., Emerging Properties in Self-Supervised Vision Transformers, ICCV 2021"


class PrototypeLayer(nn.Module):
    """Weight-normalised linear layer without bias: ``W = g * v / ||v||`` per output row (g fixed to 1 when ``norm``)."""

    def __init__(self, d_in: int, d_out: int, norm: bool = True):
        super().__init__()
        self.weight_v = nn.Parameter(nn.init.trunc_normal_(torch.empty(d_out, d_in), std=0.02))
        self.weight_g = nn.Parameter(torch.ones(d_out, 1), requires_grad=not norm)

    def forward(self, x):
        return F.linear(x, self.weight_g * F.normalize(self.weight_v, dim=1))


class DINOHead(nn.Module):
    """MLP to a bottleneck, L2 normalisation, then the prototype layer (DINO's head)."""

    def __init__(
        self,
        d_in: int,
        out_dim: int = 65536,
        hidden: int = 2048,
        bottleneck: int = 256,
        n_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        dims = [d_in] + [hidden] * (n_layers - 1) + [bottleneck]
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers += [nn.BatchNorm1d(dims[i + 1])] if use_bn else []
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = PrototypeLayer(bottleneck, out_dim, norm_last_layer)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def dino_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float | torch.Tensor,
) -> torch.Tensor:
    """Eq. 3: mean over pairs (teacher view i, student view v != i) of the cross-entropy H(P_t, P_s).

    ``student`` holds the student's logits of every view (global views first), ``teacher`` the teacher's
    logits of the global views, in the same order; ``center`` is subtracted from the teacher's logits.
    """
    targets = [F.softmax((t - center) / teacher_temp, dim=-1).detach() for t in teacher]
    logp = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    total, pairs = student[0].new_zeros(()), 0
    for i, q in enumerate(targets):
        for v, lp in enumerate(logp):
            if v != i:
                total = total + (-(q * lp).sum(dim=-1)).mean()
                pairs += 1
    return total / pairs


def forward_by_resolution(backbone: nn.Module, head: nn.Module, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """Run consecutive views of the same size as one batch (DINO's MultiCropWrapper), split per view."""
    out, start = [], 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape[-1] == views[start].shape[-1]:
            end += 1
        z = head(backbone(torch.cat(views[start:end])))
        out.extend(z.chunk(end - start))
        start = end
    return out


class DINO(Method):
    distillation = "predictive"  # CaSSLe uses its "knowledge" distiller here; not implemented (ssl_bench.blocks.distill)
    recipes = {
        "s3l": {
            "extends": "solo-lars-s3l",
            "lr": 0.3,
            "lr_scaling": "linear",
            "weight_decay": 1e-06,
            "options": {
                "out_dim": 4096,
                "hidden": 2048,
                "bottleneck": 256,
                "momentum": 0.9995,
                "warmup_teacher_temp": 0.04,
                "teacher_temp": 0.07,
                "warmup_teacher_temp_epochs": 2.5,
                "clip_grad": 0.0,
                "n_local": 0,
            },
        },
        "cpu": {
            "extends": "lars-sqrt",
            "weight_decay": 1e-06,
            "options": {
                "out_dim": 2048,
                "hidden": 1024,
                "bottleneck": 256,
                "use_bn": True,
                "momentum": 0.99,
                "warmup_teacher_temp": 0.04,
                "teacher_temp": 0.07,
                "warmup_teacher_temp_epochs": 1.0,
                "clip_grad": 0.0,
                "n_local": 0,
            },
        },
        "smoke": {
            "extends": "lars-sqrt-smoke",
            "weight_decay": 1e-06,
            "options": {
                "out_dim": 1024,
                "hidden": 512,
                "bottleneck": 128,
                "momentum": 0.99,
                "warmup_teacher_temp": 0.04,
                "teacher_temp": 0.07,
                "warmup_teacher_temp_epochs": 0.0,
                "freeze_last_layer": 0.0,
                "clip_grad": 0.0,
                "n_local": 2,
            },
        },
    }

    def __init__(
        self,
        backbone,
        out_dim: int = 65536,
        hidden: int = 2048,
        bottleneck: int = 256,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: float = 30.0,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        freeze_last_layer: float = 1.0,
        clip_grad: float = 3.0,
        n_local: int = 8,
        local_size: float = 96 / 224,
        global_scale: tuple[float, float] | list[float] | None = None,
        local_scale: tuple[float, float] | list[float] = (0.05, 0.4),
    ):
        super().__init__(backbone)
        if min(student_temp, teacher_temp, warmup_teacher_temp) <= 0:
            raise UserError("dino: temperatures must be > 0")
        if not 0 <= momentum <= 1 or not 0 <= center_momentum <= 1:
            raise UserError("dino: momentum and center_momentum must be in [0, 1]")
        if min(out_dim, hidden, bottleneck) < 1 or n_local < 0 or min(freeze_last_layer, warmup_teacher_temp_epochs) < 0:
            raise UserError("dino: need positive head sizes and n_local, freeze_last_layer, warmup_teacher_temp_epochs >= 0")
        self.student_temp, self.teacher_temp, self.warmup_teacher_temp = student_temp, teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_epochs, self.freeze_last_layer = warmup_teacher_temp_epochs, freeze_last_layer
        self.center_momentum, self.base_momentum, self.clip_grad = center_momentum, momentum, clip_grad
        if global_scale is None:  # the reference's advice when multi-crop is off
            global_scale = (0.4, 1.0) if n_local else (0.14, 1.0)
        self.views = MultiCrop(
            n_global=2, n_local=n_local, local_size=local_size, global_scale=tuple(global_scale), local_scale=tuple(local_scale)
        )
        self.head = DINOHead(self.feature_dim, out_dim, hidden, bottleneck, use_bn=use_bn, norm_last_layer=norm_last_layer)
        self.teacher_backbone = frozen_copy(backbone)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self._phase_step, self._steps_per_epoch = 0, 0
        self._pending_center: torch.Tensor | None = None
        #: the teacher temperature at the current step, set by begin_phase and after_step: the loss reads this 0-d
        #: host tensor, not the step count, so ``--compile`` compiles it once (a Python number read in the forward
        #: pass is a constant of the compiled graph: a new one every step). On the host and in float64 it divides
        #: exactly as the Python number did, on the CPU and on a GPU.
        self._teacher_temp = torch.tensor(self.teacher_temp_at(self.epoch), dtype=torch.float64)

    # ---------------------------------------------------------------- schedules
    @property
    def epoch(self) -> float:
        """Epochs of the current phase done so far (0 before :meth:`begin_phase` is called: no warm-up, no freeze)."""
        return self._phase_step / self._steps_per_epoch if self._steps_per_epoch else float("inf")

    def teacher_temp_at(self, epoch: float) -> float:
        """Linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp`` over ``warmup_teacher_temp_epochs``."""
        if epoch >= self.warmup_teacher_temp_epochs:
            return self.teacher_temp
        t = epoch / self.warmup_teacher_temp_epochs
        return self.warmup_teacher_temp + t * (self.teacher_temp - self.warmup_teacher_temp)

    def begin_phase(self, steps, steps_per_epoch):
        self._phase_step, self._steps_per_epoch = 0, max(1, steps_per_epoch)
        self._teacher_temp.fill_(self.teacher_temp_at(self.epoch))

    # ---------------------------------------------------------------- loss
    def loss(self, views, labels):
        n_global = self.views.n_global
        student = forward_by_resolution(self.backbone, self.head, views)
        with torch.no_grad():
            teacher = forward_by_resolution(self.teacher_backbone, self.teacher_head, views[:n_global])
        loss = dino_loss(student, teacher, self.center, self.student_temp, self._teacher_temp)
        if self.training:
            self._pending_center = torch.cat(teacher).mean(dim=0, keepdim=True)
        return loss

    def project(self, x):
        """The head's bottleneck embedding (before the prototypes), what distillation strategies match."""
        return self.head.mlp(self.backbone(x))

    def after_backward(self):
        if self.clip_grad:
            for p in list(self.backbone.parameters()) + list(self.head.parameters()):
                if p.grad is not None:  # the reference's per-parameter clipping
                    p.grad.mul_((self.clip_grad / (p.grad.norm() + 1e-6)).clamp(max=1.0))
        if self.epoch < self.freeze_last_layer:
            for p in self.head.last_layer.parameters():
                p.grad = None

    @torch.no_grad()
    def after_step(self, progress):
        m = cosine_momentum(self.base_momentum, 1.0, progress)
        ema_update([self.teacher_backbone, self.teacher_head], [self.backbone, self.head], m)
        if self._pending_center is not None:
            batch_center = self._pending_center
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(batch_center)
                batch_center /= dist.get_world_size()
            self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)
            self._pending_center = None
        self._phase_step += 1
        self._teacher_temp.fill_(self.teacher_temp_at(self.epoch))


@hookimpl
def ssl_bench_methods():
    return {"dino": DINO}
