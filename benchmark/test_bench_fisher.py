"""Per-sample Fisher diagonal: fisher_diagonal (hooks + ssl_bench::fisher_* kernels) against one ordinary
forward+backward and against torch.func vmap(grad), batch 256 at 32 px, on a small ResNet-style conv net
(78 k parameters) and, on CUDA, on the harness's own ResNet-18 backbone (11 M parameters, S3L stem).

Goals (issue 7): Fisher <= 1.5x the time of one ordinary backward (here: forward + backward, since
fisher_diagonal runs the forward too), and >= 10x faster than vmap(grad) for ResNet-18 on CUDA, the backbone
EWC regularises in the shipped protocols. Both are REPORTED (``goal_*_met`` in the JSON, "met"/"MISSED" in the
output), not asserted: benchmark/RESULTS.md records them missed on an H100 (ResNet-18: 2.75x one backward, 1.7x
faster than vmap(grad), whose cost on a GPU is a few backward passes, not the goal's assumption), and a
benchmark that fails on a known, documented miss only stops the GPU runs after it. What is asserted: the
compiled reductions are faster than the same hooks with PyTorch's reductions, the reason they exist (1.28x on
the CPU, 4.1x on an H100 for ResNet-18, RESULTS.md). For the small net vmap(grad) of 78 k parameters costs just
a few backward passes (on the CPU ~3-4, on an H100 ~2), so no method that needs a backward pass can be 10x
faster there. Run:
    pytest benchmark/test_bench_fisher.py -s
"""

import pytest
import torch
import torch.nn.functional as F
from benchtools import DEVICES, median_time
from torch import nn

from ssl_bench.ops.fisher import fisher_diagonal, fisher_diagonal_vmap


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Conv2d(cin, cout, 1, stride, bias=False) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.short(x))


def small_resnet(width=16, classes=10):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        Block(width, width, 1),
        Block(width, 2 * width, 2),
        Block(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, classes),
    )


def resnet18():
    from ssl_bench_plugins.backbones.resnet import resnet18 as backbone

    net = backbone()
    return nn.Sequential(net, nn.Linear(net.feature_dim, 10))


@pytest.mark.parametrize("arch", ["small", "resnet18"])
@pytest.mark.parametrize("device", DEVICES)
def test_fisher_vs_backward_and_vmap(benchmark, device, arch):
    if arch == "resnet18" and device == "cpu":
        pytest.skip("ResNet-18 at batch 256 is measured on CUDA only (vmap(grad) would take minutes on 2 cores)")
    torch.manual_seed(0)
    batch = 256
    model = (small_resnet() if arch == "small" else resnet18()).to(device).eval()
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def loss_fn():
        return F.cross_entropy(model(x), y, reduction="sum")

    def backward():
        model.zero_grad(set_to_none=True)
        loss_fn().backward()

    reps = 3 if device == "cpu" else 20
    t_backward = median_time(backward, device, reps)
    t_kernel = median_time(lambda: fisher_diagonal(model, loss_fn, use_kernel=True), device, reps)
    slow = {"repeats": 1, "warmup": False} if device == "cpu" else {"repeats": 5}  # keep the CPU run modest
    t_hooks_ref = median_time(lambda: fisher_diagonal(model, loss_fn, use_kernel=False), device, **slow)
    t_vmap = median_time(
        lambda: fisher_diagonal_vmap(model, lambda o, t: F.cross_entropy(o, t, reduction="sum"), x, y), device, **slow
    )
    benchmark.pedantic(lambda: fisher_diagonal(model, loss_fn, use_kernel=True), rounds=reps, iterations=1)
    ratio_bw, speedup_vmap = t_kernel / t_backward, t_vmap / t_kernel
    backward_met = ratio_bw <= 1.5
    vmap_met = speedup_vmap >= 10 if device == "cuda" and arch == "resnet18" else None  # the goal's case only
    benchmark.extra_info.update(
        goal_backward_met=backward_met,
        goal_vmap_met=vmap_met,
        batch=batch,
        t_forward_backward=t_backward,
        t_fisher_kernel=t_kernel,
        t_fisher_reference_reductions=t_hooks_ref,
        t_vmap_grad=t_vmap,
        ratio_to_backward=ratio_bw,
        speedup_vs_vmap=speedup_vmap,
    )
    print(
        f"\n[fisher {device.upper()}] {arch} 32px batch {batch}, {sum(p.numel() for p in model.parameters())} params: "
        f"forward+backward {t_backward * 1e3:.1f} ms | fisher_diagonal (kernels) {t_kernel * 1e3:.1f} ms "
        f"= {ratio_bw:.2f}x backward | with reference reductions {t_hooks_ref * 1e3:.1f} ms | "
        f"vmap(grad) {t_vmap * 1e3:.1f} ms = {speedup_vmap:.1f}x slower than the kernel | goals: "
        f"<= 1.5x backward {'met' if backward_met else 'MISSED'}"
        + ("" if vmap_met is None else f", >= 10x vmap(grad) {'met' if vmap_met else 'MISSED'}")
    )
    assert t_kernel < t_hooks_ref, (
        f"the compiled reductions ({t_kernel * 1e3:.1f} ms) are not faster than PyTorch's ({t_hooks_ref * 1e3:.1f} ms)"
    )
