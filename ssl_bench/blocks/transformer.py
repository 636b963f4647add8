"""A small Vision Transformer (public building blocks for backbone and method plugins).

Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021; the layout is timm's / DINO's /
MAE's pre-norm ViT: a patch embedding (a convolution with kernel = stride = patch size), a class
token, position embeddings, ``depth`` blocks ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` (MLP ratio 4,
GELU), a final LayerNorm (eps 1e-6). Attention is :func:`torch.nn.functional.scaled_dot_product_attention`,
which picks flash / memory-efficient kernels on a GPU.

Written here rather than taken from timm so that the harness has no extra runtime dependency and
the few things SSL methods need from the encoder are explicit, small and tested:

* :meth:`VisionTransformer.tokens` embeds patches and adds position embeddings *without* running the
  blocks, so MAE can drop masked patches before the encoder (``keep``), as the MAE reference does;
* position embeddings are stored for a base grid (``img_size / patch_size``) and bicubically
  interpolated to any other grid (DINO's ``interpolate_pos_encoding``): S3L's schedule changes the
  resolution inside a phase, multi-crop feeds smaller local crops, and evaluation runs at full size;
* ``pos_embed="sincos"`` gives MAE's / MoCo v3's fixed 2-d sine-cosine table (not trained);
  ``"learned"`` (DINO, timm) a trained one initialised with a truncated normal of std 0.02. Not given
  (``None``), the table is learned unless the method asks for its reference's kind
  (:meth:`VisionTransformer.use_pos_embed`: MoCo v3 and MAE ask for ``sincos``); given, it is kept;
* ``pool="cls"`` (the class token after the final norm; DINO, MoCo v3) or ``"mean"`` (the mean of the
  patch tokens after the final norm) is what :meth:`forward` returns, ``feature_dim = embed_dim``.

An input side that the patch size does not divide is a :class:`~ssl_bench.errors.UserError`
(:meth:`VisionTransformer.check_input`; the engine calls it for every resolution a run will use
before training starts).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.errors import UserError

__all__ = ["VisionTransformer", "Block", "Attention", "sincos_pos_embed", "interpolate_grid", "is_vit"]


def sincos_pos_embed(dim: int, grid: int, base_grid: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """MAE's 2-d sine-cosine position table, ``[grid * grid, dim]``, rows in raster order.

    Half of the channels encode the row, half the column; each half is ``[sin(p w_k), cos(p w_k)]``
    with ``w_k = 10000^(-k / (dim / 4))``. With ``base_grid`` the positions are the cell centres in units of
    the base grid's cells (``(p + 1/2) base_grid / grid - 1/2``), so another grid sees the same image coordinates.
    Computed on ``device`` (a table made on the host and copied would make a GPU step wait for the copy).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    scale = (base_grid or grid) / grid
    pos = (torch.arange(grid, dtype=torch.float64, device=device) + 0.5) * scale - 0.5  # cell centres, in base-grid units
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim / 4))

    def one_axis(p: torch.Tensor) -> torch.Tensor:  # [grid, dim / 2]
        angles = p[:, None] * omega[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    rows, cols = one_axis(pos), one_axis(pos)
    table = torch.cat([rows[:, None, :].expand(grid, grid, -1), cols[None, :, :].expand(grid, grid, -1)], dim=2)
    return table.reshape(grid * grid, dim).float()


def interpolate_grid(table: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize a ``[g * g, D]`` position table to ``[grid * grid, D]`` (bicubic, as DINO; identity if equal)."""
    g = math.isqrt(table.shape[0])
    if g == grid:
        return table
    x = table.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    x = F.interpolate(x.float(), size=(grid, grid), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(table.dtype)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class DropPath(nn.Module):
    """Stochastic depth per sample (DINO uses rate 0.1; 0 by default here)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module) -> None:
    """timm / MAE initialisation: Linear xavier-uniform, zero bias; LayerNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VisionTransformer(nn.Module):
    """A ViT trunk returning the class token or the mean patch token; ``feature_dim = embed_dim``."""

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        heads: int,
        patch_size: int = 4,
        img_size: int = 32,
        mlp_ratio: float = 4.0,
        pos_embed: str | None = None,
        pool: str = "cls",
        drop_path_rate: float = 0.0,
        name: str = "vit",
    ):
        super().__init__()
        #: whether the options chose the position embedding (else a method may: :meth:`use_pos_embed`)
        self.pos_embed_chosen = pos_embed is not None
        pos_embed = pos_embed if pos_embed is not None else "learned"
        for key, value, allowed in (("pos_embed", pos_embed, ("learned", "sincos")), ("pool", pool, ("cls", "mean"))):
            if value not in allowed:
                raise UserError(f"{name}: {key} must be one of {', '.join(allowed)}, got {value!r}")
        if not isinstance(patch_size, int) or patch_size < 1 or not isinstance(depth, int) or depth < 1:
            raise UserError(f"{name}: patch_size and depth must be positive integers, got {patch_size!r} and {depth!r}")
        if img_size % patch_size:
            raise UserError(f"{name}: patch size {patch_size} does not divide img_size {img_size}")
        self.name, self.embed_dim, self.patch_size, self.pool = name, embed_dim, patch_size, pool
        self.feature_dim = embed_dim
        self.base_grid = img_size // patch_size
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self._position_table(pos_embed)
        rates = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]
        self.blocks = nn.ModuleList([Block(embed_dim, heads, mlp_ratio, drop_path=r) for r in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        init_weights(self)
        w = self.patch_embed.weight  # MAE: the patch projection initialised like a Linear layer
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.patch_embed.bias is not None:
            nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.cls_token, std=0.02)

    def _position_table(self, kind: str) -> None:
        self.learned_pos = kind == "learned"
        table = torch.zeros(self.base_grid**2, self.embed_dim)
        if self.learned_pos:
            self.pos_embed = nn.Parameter(nn.init.trunc_normal_(table, std=0.02))
        else:  # fixed: a buffer, so it is saved and moved with the model but never trained
            self.register_buffer("pos_embed", sincos_pos_embed(self.embed_dim, self.base_grid))
        # the class token's position embedding is zero in MAE's table and learned in timm's; one learned vector
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, self.embed_dim)) if self.learned_pos else None

    def use_pos_embed(self, kind: str) -> None:
        """A method's default position embedding (``"learned"`` or ``"sincos"``), taken when the backbone's options
        did not choose one; call it before the optimiser or any copy of the backbone exists. Draws no random
        numbers (a learned table was drawn at construction either way), so the other weights stay the same."""
        if kind not in ("learned", "sincos"):
            raise UserError(f"{self.name}: pos_embed must be one of learned, sincos, got {kind!r}")
        if self.pos_embed_chosen or kind == ("learned" if self.learned_pos else "sincos"):
            return
        device = self.cls_token.device
        del self.pos_embed
        del self.cls_pos
        if kind == "learned":
            with torch.random.fork_rng(devices=[]):
                self._position_table(kind)
        else:
            self._position_table(kind)
        self.to(device)

    def check_input(self, size: int) -> None:
        """Raise a one-line UserError when the patch size does not divide an input side of ``size`` pixels."""
        if size % self.patch_size:
            raise UserError(
                f"backbone {self.name}: patch size {self.patch_size} does not divide the resolution "
                f"{size} px; choose a patch size that divides every resolution of the run"
            )

    def grid_pos(self, grid: int) -> torch.Tensor:
        """Position embeddings of the patch tokens for a ``grid x grid`` input, ``[grid * grid, D]``."""
        if not self.learned_pos and grid != self.base_grid:
            # a fixed table is recomputed exactly at the new grid, in the base grid's coordinates
            return sincos_pos_embed(self.embed_dim, grid, self.base_grid, self.pos_embed.device).to(self.pos_embed.dtype)
        return interpolate_grid(self.pos_embed, grid)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` -> patch embeddings plus position embeddings, ``[B, L, D]`` (no class token)."""
        self.check_input(x.shape[-1])
        if x.shape[-2] != x.shape[-1]:
            raise UserError(f"backbone {self.name}: needs square inputs, got {x.shape[-2]}x{x.shape[-1]}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        return tokens + self.grid_pos(x.shape[-1] // self.patch_size).unsqueeze(0)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend the class token to position-embedded patch tokens, run the blocks and the final norm."""
        cls = self.cls_token if self.cls_pos is None else self.cls_token + self.cls_pos
        x = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All output tokens ``[B, 1 + L, D]`` (class token first), after the final norm."""
        return self.encode(self.patchify(x))

    def pooled(self, out: torch.Tensor) -> torch.Tensor:
        return out[:, 0] if self.pool == "cls" else out[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(self.tokens(x))


def is_vit(module: nn.Module) -> bool:
    """Whether ``module`` offers the token interface of :class:`VisionTransformer` (patchify, encode, patch_size)."""
    return all(hasattr(module, a) for a in ("patchify", "encode", "patch_size", "blocks"))
