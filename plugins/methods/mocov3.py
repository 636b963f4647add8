"""MoCo v3: symmetric InfoNCE between a query encoder with a predictor and a momentum key encoder.

Chen, Xie & He, An Empirical Study of Training Self-Supervised Vision Transformers, ICCV 2021
(reference code: facebookresearch/moco-v3, ``moco/builder.py``).

The query path is backbone ``f_q``, projector ``g_q`` and predictor ``h``; the key path is the momentum
copy of backbone and projector, ``theta_k <- m theta_k + (1 - m) theta_q`` with ``m`` rising from
``momentum`` = 0.99 to 1 on a cosine over the run. With ``q_i = h(g_q(f_q(x_i)))`` and
``k_i = g_k(f_k(x_i))``, L2-normalised, the loss (Algorithm 1 of the paper) is

    L = ctr(q_1, k_2) + ctr(q_2, k_1),
    ctr(q, k) = 2 tau * mean_n -log( exp(q_n . k_n / tau) / sum_m exp(q_n . k_m / tau) )

over the keys of the batch (of all ranks under DDP; no queue), computed by the fused contrastive op
(:func:`ssl_bench.ops.info_nce`, non-symmetric mode, once per direction). The factor 2 tau is the
reference's (it makes the gradient scale independent of tau).

Paper defaults: projector 3 layers for a ViT and 2 for a ResNet, hidden 4096, output 256, every linear
without bias, BatchNorm + ReLU between layers and a BatchNorm without affine after the projector's
last layer; predictor 2 layers, hidden 4096, ending with a BatchNorm without affine for a ViT and without
one for a ResNet (``moco/builder.py``: ``MoCo_ViT`` builds it with ``_build_mlp``'s default ``last_bn=True``,
``MoCo_ResNet`` passes ``False``; solo-learn's ``mocov3.py`` does the same; ``pred_last_bn`` overrides it;
0.1.0 had none for either); temperature 0.2 for a ViT and
1.0 for a ResNet (``temperature=None`` picks by backbone); for a ViT the patch projection is frozen at
its random initialisation (``freeze_patch_embed``, the paper's stability trick, Sec. 4.2), and the position
embeddings are the reference's fixed 2-d sine-cosine table (``vits.py``: ``build_2d_sincos_position_embedding``,
the class token's embedding zero) unless the backbone's options set ``pos_embed`` (``"learned"`` keeps a
trained table; 0.1.0 used the backbone's default, learned).

Where this differs from the reference: no queue and no shuffling are involved in either; the ViT's
weight initialisation is this project's (``ssl_bench.blocks.transformer``), not the reference's per-layer uniform
scaling of the qkv and patch weights.

Recipes (``recipes``): "s3l" from solo-learn's ``scripts/pretrain/cifar/mocov3.yaml`` (ResNet-18, 32 px:
LARS lr 0.3 at batch 256, weight decay 1e-6, trust 0.02 with clipping, BN/bias excluded, temperature 0.2,
momentum 0.99 -> 1, heads 4096 -> 256); "cpu" and "smoke" are for a few hundred steps: LARS with SimCLR's
square-root learning-rate rule for small batches and short training (lr = 0.075 sqrt(B), 1.2 at batch 256;
Chen et al. 2020, Appendix B.1; at 0.3 with linear scaling the probe did not move in 300 steps) and smaller
heads; checked by ``benchmark/learning_check.py`` (benchmark/RESULTS.md).
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method
from ssl_bench.blocks.heads import cosine_momentum, ema_update, frozen_copy, online_and_target
from ssl_bench.blocks.transformer import is_vit
from ssl_bench.errors import UserError
from ssl_bench.ops import info_nce

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "Chen, Xie & He, An Empirical Study of Training Self-Supervised Vision Transformers, ICCV 2021"


def build_mlp(n_layers: int, d_in: int, hidden: int, d_out: int, last_bn: bool) -> nn.Sequential:
    """MoCo v3's MLP: Linear (no bias) + BN + ReLU between layers; BN without affine after the last if ``last_bn``."""
    layers: list[nn.Module] = []
    for i in range(n_layers):
        a = d_in if i == 0 else hidden
        b = d_out if i == n_layers - 1 else hidden
        layers.append(nn.Linear(a, b, bias=False))
        if i < n_layers - 1:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*layers)


def mocov3_loss(q1, q2, k1, k2, temperature: float) -> torch.Tensor:
    """``ctr(q1, k2) + ctr(q2, k1)``, each the InfoNCE over the batch's keys scaled by ``2 tau``."""
    return (
        2
        * temperature
        * (info_nce(q1, k2.detach(), temperature, symmetric=False) + info_nce(q2, k1.detach(), temperature, symmetric=False))
    )


class MoCoV3(Method):
    distillation = "contrastive"  # CaSSLe's distiller for this kind of method (ssl_bench.blocks.distill)
    recipes = {
        "s3l": {
            "extends": "solo-lars-s3l",
            "lr": 0.3,
            "lr_scaling": "linear",
            "weight_decay": 1e-06,
            "options": {"proj_hidden": 4096, "proj_dim": 256, "pred_hidden": 4096, "temperature": 0.2, "momentum": 0.99},
        },
        "cpu": {
            "extends": "lars-sqrt",
            "weight_decay": 1e-06,
            "options": {"proj_hidden": 1024, "proj_dim": 256, "pred_hidden": 1024, "temperature": 0.2, "momentum": 0.99},
        },
        "smoke": {
            "extends": "lars-sqrt-smoke",
            "weight_decay": 1e-06,
            "options": {"proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512, "temperature": 0.2, "momentum": 0.99},
        },
    }

    def __init__(
        self,
        backbone,
        proj_hidden: int = 4096,
        proj_dim: int = 256,
        pred_hidden: int = 4096,
        proj_layers: int | None = None,
        temperature: float | None = None,
        momentum: float = 0.99,
        freeze_patch_embed: bool = True,
        pred_last_bn: bool | None = None,
    ):
        super().__init__(backbone)
        vit = is_vit(backbone)
        temperature = temperature if temperature is not None else (0.2 if vit else 1.0)
        proj_layers = proj_layers if proj_layers is not None else (3 if vit else 2)
        if temperature <= 0 or not 0 <= momentum <= 1 or proj_layers < 1:
            raise UserError("mocov3: need temperature > 0, 0 <= momentum <= 1 and proj_layers >= 1")
        self.temperature, self.base_momentum = temperature, momentum
        if vit:
            backbone.use_pos_embed("sincos")  # the reference's fixed 2-d sin-cos table, unless the options chose one
        if vit and freeze_patch_embed:
            backbone.patch_embed.requires_grad_(False)
        self.projector = build_mlp(proj_layers, self.feature_dim, proj_hidden, proj_dim, last_bn=True)
        pred_last_bn = pred_last_bn if pred_last_bn is not None else vit  # the reference's: a ViT's ends with BN
        self.predictor = build_mlp(2, proj_dim, pred_hidden, proj_dim, last_bn=pred_last_bn)
        self.key_backbone = frozen_copy(backbone)
        self.key_projector = frozen_copy(self.projector)

    def loss(self, views, labels):
        query, key = (self.backbone, self.projector, self.predictor), (self.key_backbone, self.key_projector)
        (q1, q2), (k1, k2) = online_and_target(views[:2], query, key)
        return mocov3_loss(q1, q2, k1, k2, self.temperature)

    def momentum_at(self, progress: float) -> float:
        """The reference's cosine rise from ``momentum`` to 1 over the run."""
        return cosine_momentum(self.base_momentum, 1.0, progress)

    @torch.no_grad()
    def after_step(self, progress):
        ema_update([self.key_backbone, self.key_projector], [self.backbone, self.projector], self.momentum_at(progress))


@hookimpl
def ssl_bench_methods():
    return {"mocov3": MoCoV3}
