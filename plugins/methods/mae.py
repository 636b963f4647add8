"""MAE: masked autoencoders, a ViT encoder on a random 25% of the patches and a light decoder predicting the rest.

He et al., Masked Autoencoders Are Scalable Vision Learners, CVPR 2022 (reference code:
facebookresearch/mae, ``models_mae.py``).

An image is cut into ``L`` patches of ``p x p`` pixels. Per sample, a uniformly random subset of
``L (1 - r)`` patches is kept (``r`` = ``mask_ratio`` = 0.75; the reference's argsort of uniform noise);
the encoder (the protocol's ViT backbone) sees only the kept patch tokens (with their position
embeddings) and its class token. The decoder embeds the encoder's output to ``decoder_dim``, puts a
shared learned mask token at every removed position, adds fixed 2-d sine-cosine position embeddings,
runs ``decoder_depth`` transformer blocks and predicts each patch's ``p * p * 3`` pixel values. The loss is
the mean squared error over the removed patches only, against per-patch normalised pixels (Eq. in
Sec. 3, "normalised pixels" of Table 1d):

    t_j = (x_j - mean(x_j)) / sqrt(var(x_j) + 1e-6),   L = sum_j m_j ||y_j - t_j||^2 / (p^2 3) / sum_j m_j

(``m_j`` = 1 for a removed patch; ``var`` the unbiased variance over the patch's pixels, as the reference;
``norm_pix_loss=False`` uses the raw pixels). Paper defaults: mask ratio 0.75, decoder 512 wide, 8 blocks,
16 heads, normalised-pixel loss; augmentation: random resized crop with scale (0.2, 1) and flip only
(this method asks for the ``mae`` recipe and ONE view, whatever the protocol's recipe).

The linear probe and the other evaluators see the encoder's CLASS TOKEN after its final norm, as the
reference's linear probe does (``main_linprobe.py``: ``global_pool`` defaults to False; its fine-tuning,
``main_finetune.py``, pools by default). ``pool="mean"`` (the mean of the patch tokens after the final norm)
is the option: MAE trains no loss on the class token (the reference appends it only "to adapt to ViT's
design"), and on short budgets the class token can be a weak summary (0.1.0 pooled by default; results
made with it say so in their method version). The encoder's position embeddings are the reference's fixed
2-d sine-cosine table (``models_mae.py``, the class token's embedding zero) unless the backbone's options set
``pos_embed`` (``"learned"`` keeps a trained table; 0.1.0 used the backbone's default, learned).

Needs a Vision Transformer backbone (``vit_tiny``, ``vit_small``, ``vit_base``); any other is a one-line
error. The shipped protocol families (smoke, cpu, s3l) all use ResNet backbones, so ``recipes`` is
empty: MAE cannot serve them. For a ViT protocol the reference recipe is AdamW, base lr 1.5e-4 at batch
256 (linear scaling), betas (0.9, 0.95), weight decay 0.05, 40 warm-up epochs of 800, cosine
(solo-learn's CIFAR config: lr 2e-4, decoder 512 x 8, patch 4 at 32 px); ``benchmark/learning_check.py``
runs it on generated data.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Method
from ssl_bench.blocks.augment import MultiCrop
from ssl_bench.blocks.transformer import Block, init_weights, is_vit, sincos_pos_embed
from ssl_bench.errors import UserError

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "He et al., Masked Autoencoders Are Scalable Vision Learners, CVPR 2022"


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``[B, L, p * p * 3]``: patches in raster order, each row-major with channels last
    (the reference's order)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def random_masking(n: int, length: int, ratio: float, device, generator: torch.Generator | None = None):
    """Per sample, keep ``int(length * (1 - ratio))`` random positions: (kept indices ``[n, k]``, mask ``[n, L]``
    with 1 = removed, the permutation that restores the original order ``[n, L]``)."""
    keep = int(length * (1 - ratio))
    noise = torch.rand(n, length, device=device, generator=generator)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    mask = torch.ones(n, length, device=device)
    mask[:, :keep] = 0
    return shuffle[:, :keep], torch.gather(mask, 1, restore), restore


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """Mean squared error per patch, averaged over the removed patches (``mask`` = 1)."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


class MAE(Method):
    n_views = 1
    recipes: dict[str, dict] = {}

    def __init__(
        self,
        backbone,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        norm_pix_loss: bool = True,
        pool: str = "cls",
    ):
        if not is_vit(backbone):
            raise UserError(
                f"method 'mae' needs a Vision Transformer backbone (vit_tiny, vit_small, vit_base), "
                f"got {type(backbone).__name__}; set the protocol's backbone.name to a ViT"
            )
        super().__init__(backbone)
        if not 0 < mask_ratio < 1:
            raise UserError(f"mae: mask_ratio must be in (0, 1), got {mask_ratio}")
        if pool not in ("mean", "cls"):
            raise UserError(f"mae: pool must be 'mean' or 'cls', got {pool!r}")
        if decoder_dim % decoder_heads or decoder_dim % 4:
            raise UserError(f"mae: decoder_dim {decoder_dim} must be divisible by decoder_heads {decoder_heads} and by 4")
        backbone.pool = pool
        backbone.use_pos_embed("sincos")  # the reference's fixed table, unless the backbone's options chose one
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.views = MultiCrop(n_global=1, recipe="mae")
        p = backbone.patch_size
        self.decoder_embed = nn.Linear(self.feature_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_blocks = nn.ModuleList([Block(decoder_dim, decoder_heads) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, p * p * 3)
        init_weights(self.decoder_embed)
        init_weights(self.decoder_blocks)
        init_weights(self.decoder_norm)
        init_weights(self.decoder_pred)
        nn.init.normal_(self.mask_token, std=0.02)

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Predicted patches ``[B, L, p*p*3]`` and the mask ``[B, L]`` (1 = removed) for normalised images ``x``."""
        bb = self.backbone
        tokens = bb.patchify(x)  # [B, L, D], position embeddings added
        n, length, d = tokens.shape
        kept, mask, restore = random_masking(n, length, self.mask_ratio, x.device, generator)
        latent = bb.encode(torch.gather(tokens, 1, kept.unsqueeze(-1).expand(-1, -1, d)))  # [B, 1 + k, D]
        y = self.decoder_embed(latent)
        dd = y.shape[-1]
        fill = self.mask_token.expand(n, length - kept.shape[1], -1)
        patches = torch.gather(torch.cat([y[:, 1:], fill], dim=1), 1, restore.unsqueeze(-1).expand(-1, -1, dd))
        grid = x.shape[-1] // bb.patch_size
        pos = sincos_pos_embed(dd, grid, bb.base_grid, y.device).to(y.dtype)
        y = torch.cat([y[:, :1], patches + pos.unsqueeze(0)], dim=1)  # the class token's position embedding is 0
        for block in self.decoder_blocks:
            y = block(y)
        return self.decoder_pred(self.decoder_norm(y))[:, 1:], mask

    def loss(self, views, labels):
        x = views[0]
        pred, mask = self.reconstruct(x)
        return mae_loss(pred, patchify(x, self.backbone.patch_size), mask, self.norm_pix_loss)

    def project(self, x):
        """The encoder's pooled features of the whole image (no masking), what distillation strategies match."""
        return self.backbone(x)


@hookimpl
def ssl_bench_methods():
    return {"mae": MAE}
