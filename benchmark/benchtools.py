"""Helpers the benchmark files share: the device parameter and a synchronised median wall-clock time."""

import time

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def median_time(fn, device, repeats, warmup=True):
    """Median seconds of ``repeats`` calls of ``fn()``, synchronising CUDA around each; one warm-up call first."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]
