"""Loads the compiled operators (``ssl_bench._C``) and says which backend the ops use.

Importing ``ssl_bench._C`` registers the ops as ``torch.ops.ssl_bench.*``. When it is missing
(the package was not installed with ``pip install --no-build-isolation -e .``) every op falls
back to its plain-PyTorch reference, and a warning says so once. ``SSL_BENCH_OPS=reference``
forces the references even when the extension is built (for comparison and debugging).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

import torch  # (also loads libtorch before the extension that links against it)

log = logging.getLogger("ssl_bench.ops")

try:
    from ssl_bench import _C

    _load_error: Exception | None = None
except ImportError as exc:  # not built, or built against another torch
    _C = None
    _load_error = exc

_announced = False
_local = threading.local()  # reference_ops() blocks active in this thread


def available() -> bool:
    """True when the compiled extension is loaded (its ops are registered with torch)."""
    return _C is not None


def has_cuda() -> bool:
    """True when the extension was built with its CUDA kernels."""
    return _C is not None and bool(_C.with_cuda())


def forced_reference() -> bool:
    """True inside :func:`reference_ops` or when ``SSL_BENCH_OPS=reference`` is set."""
    return getattr(_local, "depth", 0) > 0 or os.environ.get("SSL_BENCH_OPS", "").strip().lower() == "reference"


@contextlib.contextmanager
def reference_ops():
    """Run the plain-PyTorch references inside the block (this thread only).

    For code that needs what a kernel does not provide: the fused contrastive kernel has a first
    derivative only, and Hessian-vector products (ssl_bench.ops.sharpness) need the second.
    """
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def use_compiled() -> bool:
    """Whether the ops dispatch to the compiled kernels (logs the choice the first time)."""
    announce()
    return available() and not forced_reference()


def kernels(device=None):
    """``torch.ops.ssl_bench`` when the compiled kernels (for ``device``, if given) are in use, else None."""
    if not use_compiled():
        return None
    if device is not None and torch.device(device).type == "cuda" and not has_cuda():
        return None
    return torch.ops.ssl_bench


def backend() -> str:
    """``"compiled (cpu)"``, ``"compiled (cpu+cuda)"`` or ``"reference"``: what the ops run on."""
    if not available() or forced_reference():
        return "reference"
    return "compiled (cpu+cuda)" if has_cuda() else "compiled (cpu)"


def announce() -> None:
    """Log once which backend the ops use (a warning when the extension is missing)."""
    global _announced
    if _announced:
        return
    _announced = True
    if forced_reference():
        log.info("ssl_bench.ops: PyTorch reference implementations (SSL_BENCH_OPS=reference)")
    elif available():
        log.info("ssl_bench.ops: compiled kernels from ssl_bench._C (%s)", backend())
    else:
        log.warning(
            "ssl_bench.ops: PyTorch reference implementations, the extension ssl_bench._C is not built "
            "(%s); run `pip install --no-build-isolation -e .` to build it",
            _load_error,
        )
