"""Vision Transformer backbones: shapes, position-embedding interpolation, the patch-size check."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.blocks import transformer as V
from ssl_bench.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "backbones" / "vit.py"


def _plugin():
    """plugins/backbones/vit.py as a module (loaded from its file, as ``--plugin`` does)."""
    name = "ssl_bench_test_vit_plugin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PLUGIN)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize("name,width", [("vit_tiny", 192), ("vit_small", 384), ("vit_base", 768)])
def test_factories_give_the_deit_widths_and_feature_shapes(name, width):
    torch.manual_seed(0)
    net = getattr(_plugin(), name)(depth=1)
    assert net.feature_dim == width and net.patch_size == 4 and len(net.blocks) == 1
    for size in (32, 16, 64):
        assert net(torch.randn(2, 3, size, size)).shape == (2, width)
    assert net.tokens(torch.randn(2, 3, 32, 32)).shape == (2, 1 + 64, width)


def test_full_depth_tiny_has_twelve_blocks_and_the_registry_lists_the_three(tmp_path):
    from ssl_bench.blocks.backbones import registered

    module = _plugin()
    assert set(registered(module.__name__)) == {"vit_tiny", "vit_small", "vit_base"}
    net = module.vit_tiny()
    assert len(net.blocks) == 12 and net.blocks[0].attn.heads == 3
    assert 5.3e6 < sum(p.numel() for p in net.parameters()) < 5.5e6


def test_patch_8_at_64_px_gives_64_tokens_and_the_mean_pool():
    net = _plugin().vit_small(patch_size=8, img_size=64, pool="mean", depth=1)
    x = torch.randn(3, 3, 64, 64)
    out = net.tokens(x)
    assert out.shape == (3, 65, 384)
    assert torch.allclose(net(x), out[:, 1:].mean(1), atol=1e-6)


def test_attention_is_scaled_dot_product_attention():
    torch.manual_seed(0)
    attn = V.Attention(16, 4)
    x = torch.randn(2, 5, 16)
    q, k, v = attn.qkv(x).view(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = attn.proj((w @ v).transpose(1, 2).reshape(2, 5, 16))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_learned_position_table_is_interpolated_bicubically_to_other_grids():
    torch.manual_seed(0)
    net = _plugin().vit_tiny(depth=1)  # base grid 8 (32 px / 4)
    assert net.grid_pos(8) is net.pos_embed  # the base grid: the table itself (trained)
    table = net.pos_embed.detach().reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    for grid in (4, 16):
        expected = F.interpolate(table, size=(grid, grid), mode="bicubic", align_corners=False)
        got = net.grid_pos(grid).detach().reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        assert torch.allclose(got, expected, atol=1e-6)
    # a constant table stays constant (the weights sum to 1)
    assert torch.allclose(V.interpolate_grid(torch.full((64, 4), 0.3), 16), torch.full((256, 4), 0.3), atol=1e-6)
    # the gradient reaches the base table through the interpolation
    net(torch.randn(2, 3, 16, 16)).pow(2).sum().backward()
    assert net.pos_embed.grad is not None and net.pos_embed.grad.abs().sum() > 0


def test_sincos_table_is_mae_s_and_is_recomputed_at_the_cell_centres():
    d, g = 16, 4
    table = V.sincos_pos_embed(d, g)
    omega = 1 / 10000 ** (torch.arange(d // 4, dtype=torch.float64) / (d / 4))
    for r in range(g):
        for c in range(g):
            row = torch.cat([torch.sin(r * omega), torch.cos(r * omega), torch.sin(c * omega), torch.cos(c * omega)])
            assert torch.allclose(table[r * g + c].double(), row, atol=1e-6)
    net = _plugin().vit_tiny(depth=1, pos_embed="sincos")
    assert not net.pos_embed.requires_grad and "pos_embed" in dict(net.named_buffers())
    half = net.grid_pos(4)  # 16 px: cell (i, j) is centred on base cells 2i + 0.5
    assert torch.allclose(half, V.sincos_pos_embed(192, 4, 8))
    omega = 1 / 10000 ** (torch.arange(48, dtype=torch.float64) / 48)
    assert torch.allclose(half[0, :48].double(), torch.sin(0.5 * omega), atol=1e-6)


def test_patch_size_not_dividing_the_resolution_is_one_line():
    net = _plugin().vit_tiny(depth=1)
    with pytest.raises(UserError, match=r"^backbone vit_tiny: patch size 4 does not divide the resolution 30 px") as err:
        net(torch.randn(1, 3, 30, 30))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="patch size 8 does not divide img_size 36"):
        _plugin().vit_tiny(patch_size=8, img_size=36)
    with pytest.raises(UserError, match="pool must be one of"):
        _plugin().vit_tiny(pool="max")
