"""Sharpness: time per Hessian-vector product of the batched, sync-free Hutchinson (ssl_bench.ops.sharpness,
16 probes (8 on the CPU) in one backward) against the per-tensor loop with a host sync per probe (PyHessian style: the
gradient graph built once, one probe per backward, ``.item()`` each time).

Goal (issue 7): >= 2x faster per HVP. The gain comes from fewer kernel launches and no host syncs, i.e. it
is a GPU goal: it is asserted on CUDA; on the CPU (compute-bound, synchronous) the ratio is reported only.
Run:  pytest benchmark/test_bench_sharpness.py -s
"""

import pytest
import torch
import torch.nn.functional as F
from benchtools import DEVICES, median_time
from torch import nn

from ssl_bench.ops.sharpness import hessian_trace, hessian_trace_reference


def models(device):
    torch.manual_seed(0)
    n, px = (64, 16) if device == "cuda" else (16, 8)  # the CPU's conv double backward is slow: keep it modest
    x = torch.randn(n, 3, px, px, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    mlp = nn.Sequential(
        nn.Flatten(), nn.Linear(3 * px * px, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10)
    ).to(device)
    conv = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).to(device)
    return {"mlp": (mlp, x, y), "conv": (conv, x, y)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_hvp_batched_vs_loop(benchmark, device, arch):
    model, x, y = models(device)[arch]
    params = list(model.parameters())

    def loss():
        return F.cross_entropy(model(x), y)

    probes = 16 if device == "cuda" else 8
    reps = 3 if device == "cpu" else 10
    t_batched = (
        median_time(lambda: hessian_trace(loss, params, n_probes=probes, batch_size=probes, generator=None), device, reps)
        / probes
    )
    t_loop = median_time(lambda: hessian_trace_reference(loss, params, n_probes=probes), device, reps) / probes
    benchmark.pedantic(lambda: hessian_trace(loss, params, n_probes=probes, batch_size=probes), rounds=reps, iterations=1)
    speedup = t_loop / t_batched
    benchmark.extra_info.update(arch=arch, probes=probes, t_per_hvp_batched=t_batched, t_per_hvp_loop=t_loop, speedup=speedup)
    print(
        f"\n[sharpness {device.upper()}] {arch} ({sum(p.numel() for p in params)} params, "
        f"batch {x.shape[0]} at {x.shape[-1]} px, {probes} probes): "
        f"per HVP batched {t_batched * 1e3:.2f} ms, per-tensor loop + sync {t_loop * 1e3:.2f} ms, "
        f"speedup {speedup:.2f}x"
    )
    if device == "cuda":
        assert speedup >= 2, f"batched HVP only {speedup:.2f}x faster than the loop (goal >= 2x)"
