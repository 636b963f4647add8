"""Vision Transformer backbones for small images: ``vit_tiny``, ``vit_small``, ``vit_base``.

Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021; sizes from Touvron et al. (DeiT, 2021):
tiny 192 wide / 3 heads, small 384 / 6, base 768 / 12, all 12 blocks deep with MLP ratio 4.
The network is :class:`ssl_bench.blocks.transformer.VisionTransformer` (a small own ViT, no timm dependency; see
that module). Patch sizes for small images: 4 at 32 px (8 x 8 = 64 tokens; solo-learn's CIFAR ViTs)
and 8 at 64 px (also 64 tokens); the default is 4. ``img_size`` is the resolution the position table
is made for (default 32); other resolutions (S3L stages, local crops, evaluation) interpolate it.

Options: ``patch_size`` (4), ``img_size`` (32), ``pos_embed`` ``learned`` | ``sincos`` (not given: the method's
reference kind, fixed sine-cosine for MoCo v3 and MAE, learned for the others; given, it is kept),
``pool`` ``cls`` | ``mean`` (cls: the class token is the feature the probes see), ``depth``
(12; fewer blocks for quick tests), ``drop_path_rate`` (0; DINO trains with 0.1).
A patch size that does not divide a resolution of the run is a one-line error before training.
Registered with :func:`ssl_bench.blocks.backbones.register_backbone`, like the ResNets.
"""

from ssl_bench.blocks.backbones import register_backbone
from ssl_bench.blocks.transformer import VisionTransformer

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "Dosovitskiy et al., An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale, ICLR 2021"


#: the DeiT sizes, as timm's ``model_args``: name -> (width, heads, what it is)
VARIANTS = {
    "vit_tiny": (192, 3, "ViT-Tiny: width 192, 3 heads (5.4 M parameters at depth 12)."),
    "vit_small": (384, 6, "ViT-Small: width 384, 6 heads (21.3 M parameters at depth 12)."),
    "vit_base": (768, 12, "ViT-Base: width 768, 12 heads (85.1 M parameters at depth 12; for a GPU)."),
}


def _variant(name: str):
    embed_dim, heads, doc = VARIANTS[name]

    def factory(
        patch_size: int = 4,
        img_size: int = 32,
        pos_embed: str | None = None,
        pool: str = "cls",
        depth: int = 12,
        drop_path_rate: float = 0.0,
    ) -> VisionTransformer:
        return VisionTransformer(
            embed_dim=embed_dim,
            depth=depth,
            heads=heads,
            patch_size=patch_size,
            img_size=img_size,
            pos_embed=pos_embed,
            pool=pool,
            drop_path_rate=drop_path_rate,
            name=name,
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return register_backbone(factory)


vit_tiny, vit_small, vit_base = (_variant(name) for name in VARIANTS)
