"""Backbones: torchvision-equivalent standard stem, S3L options, and the register_backbone decorator."""

import textwrap

import pytest
import torch
import torchvision
from torch import nn

from ssl_bench.errors import UserError
from ssl_bench.registry import Registry
from ssl_bench_plugins.backbones.resnet import resnet18, resnet50

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("ours,theirs", [(resnet18, torchvision.models.resnet18), (resnet50, torchvision.models.resnet50)])
def test_standard_stem_is_torchvisions_resnet(ours, theirs):
    torch.manual_seed(0)
    ref = theirs(weights=None)
    ref.fc = nn.Identity()
    net = ours(small_stem=False)
    ref_state = list(ref.state_dict().items())
    our_state = list(net.state_dict().items())
    assert len(ref_state) == len(our_state)
    for (_, a), (_, b) in zip(ref_state, our_state):
        assert a.shape == b.shape
    net.load_state_dict({k: v for (k, _), (_, v) in zip(our_state, ref_state)})
    x = torch.randn(2, 3, 64, 64)
    ref.eval(), net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x))
    assert net.feature_dim == ref(x).shape[1]


def test_small_stem_width_and_conv5_removed():
    x = torch.randn(2, 3, 32, 32)
    small, standard = resnet18(width=0.25), resnet18(width=0.25, small_stem=False)
    assert small.stem(x).shape[-1] == 32 and standard.stem(x).shape[-1] == 8
    for width in (0.25, 0.5, 1.0):
        assert resnet18(width=width).feature_dim == int(512 * width)
        assert resnet18(width=width, drop_conv5=True).feature_dim == int(256 * width)
    assert resnet50(width=0.25).feature_dim == 2048 // 4 and resnet50(width=0.25, drop_conv5=True).feature_dim == 1024 // 4
    net = resnet18(width=0.25, drop_conv5=True)
    assert len(net.stages) == 3 and net(x).shape == (2, 64)


def test_register_backbone_decorator_in_a_user_plugin(tmp_path):
    plugin = tmp_path / "my_backbones.py"
    plugin.write_text(
        textwrap.dedent("""
        from torch import nn
        from ssl_bench.blocks.backbones import register_backbone

        __version__ = "1.0"

        class Tiny(nn.Module):
            feature_dim = 8
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            def forward(self, x):
                return self.net(x)

        @register_backbone
        def tiny_cnn():
            return Tiny()

        @register_backbone(name="tiny-cnn-2")
        def other():
            return Tiny()
    """)
    )
    reg = Registry.discover([str(plugin)])
    assert {"tiny_cnn", "tiny-cnn-2", "resnet18", "resnet50"} <= set(reg.names("backbone"))
    assert reg.get("backbone", "tiny_cnn").plugin.name == "my_backbones"
    assert reg.get("backbone", "tiny-cnn-2").factory()(torch.zeros(1, 3, 8, 8)).shape == (1, 8)


def test_register_backbone_refuses_a_hand_written_hook_it_would_hide(tmp_path):
    plugin = tmp_path / "clash.py"
    plugin.write_text(
        textwrap.dedent("""
        from ssl_bench import hookimpl
        from ssl_bench.blocks.backbones import register_backbone

        @hookimpl
        def ssl_bench_backbones():
            return {}

        @register_backbone
        def b():
            return None
    """)
    )
    with pytest.raises(UserError, match="own ssl_bench_backbones"):
        Registry.discover([str(plugin)])
