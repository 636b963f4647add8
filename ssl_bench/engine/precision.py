"""A training step's arithmetic under ``bf16``: autocast where the FLOPs are, float32 where the numbers are kept.

On CUDA the whole step runs under bf16 autocast (:meth:`ssl_bench.engine.build.Run.autocast`): CUDA's autocast
policy keeps softmax, the cross-entropies and the other losses in float32.

On the CPU, autocast's policy keeps fewer ops in float32: reductions such as ``sum`` and ``mean`` of bf16
tensors stay bf16, so most methods' losses came out in bf16 (a stored loss curve of 4.1875, 3.921875, ...),
and bf16 projections met float32 queues (MoCo's and NNCLR's fused losses refused them). So on the CPU only
the method's *encoders* run under bf16 autocast: its backbone and every module of the backbone's class (the
momentum and target copies of BYOL, MoCo, DINO, ...), whose outputs are cast back to float32. The heads, the
loss and whatever a strategy adds run in float32, and the loss is float32. Nearly all of a step's FLOPs are
in the encoders (ResNet-18 x0.25 with a 512-wide projector: over 99%), so this keeps bf16's speed.

The encoders are hooked once (:func:`install`); the hooks switch autocast on only inside :func:`step`, so
evaluation (features, sharpness) runs the encoders as they are. A method that computes with its backbone's
parts without calling its ``forward`` (MAE's ``encode``) would train in float32 under a bf16 label; the first
bf16 step checks that some encoder ran under autocast and stops with one line otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from ssl_bench.errors import UserError

#: inside :func:`step`: the number of encoder forwards that ran under autocast so far (None outside a step)
_STEP: ContextVar[list[int] | None] = ContextVar("ssl_bench_encoder_autocast", default=None)
#: the autocast contexts the pre-hooks opened (None where a hook opened none), closed by the forward hooks
_OPEN: list[Any] = []


def encoders(method: nn.Module) -> list[nn.Module]:
    """The method's backbone and every module of the same class inside the method (its copies)."""
    kind = type(method.backbone)  # type: ignore[union-attr]
    return [m for m in method.modules() if type(m) is kind]


def install(method: nn.Module) -> None:
    """Hook the method's encoders: inside :func:`step` their forward runs under CPU bf16 autocast, output float32.
    Copies of the method made later (a strategy's frozen model) carry the hooks."""
    for module in encoders(method):
        module.register_forward_pre_hook(_enter)
        module.register_forward_hook(_exit)


def _enter(module: nn.Module, args: Any) -> None:
    counter = _STEP.get()
    if counter is None:
        _OPEN.append(None)
        return
    ctx = torch.autocast("cpu", dtype=torch.bfloat16)
    ctx.__enter__()
    _OPEN.append(ctx)
    counter[0] += 1


def _exit(module: nn.Module, args: Any, output: Any) -> Any:
    ctx = _OPEN.pop() if _OPEN else None
    if ctx is None:
        return None
    ctx.__exit__(None, None, None)
    return _float(output)


def _float(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple | list):
        return type(value)(_float(v) for v in value)
    if isinstance(value, dict):
        return {k: _float(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def step(method_name: str, check: bool) -> Iterator[None]:
    """One training step with the hooked encoders under bf16 autocast. ``check``: fail when no encoder ran."""
    counter = [0]
    token = _STEP.set(counter)
    depth = len(_OPEN)
    try:
        yield
    finally:
        _STEP.reset(token)
        while len(_OPEN) > depth:  # a forward that raised left its context open
            ctx = _OPEN.pop()
            if ctx is not None:
                ctx.__exit__(None, None, None)
    if check and counter[0] == 0:
        raise UserError(
            f"method '{method_name}' computed its step without calling its backbone's forward, so bf16 on the CPU "
            "would train it in float32; use --precision fp32 for it"
        )
