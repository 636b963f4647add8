"""EWC / MAS quadratic penalty ``0.5 * lam * sum_i imp_i * (p_i - a_i)**2`` and its gradient.

``quadratic_penalty_(params, anchors, importances, lam)`` returns the penalty as a 0-dim tensor on
the parameters' device (no host synchronisation) and ADDS its gradient ``lam * imp * (p - a)`` into
every ``p.grad`` (allocated as zeros when None), in one multi-tensor pass: the compiled op
``ssl_bench::quadratic_penalty_`` (CPU: OpenMP over chunks of every tensor; CUDA: one launch over
all tensors through a chunk table) when the extension is built, else ``quadratic_penalty_reference``
(the per-parameter Python loop). ``backend()`` says which one is used; the choice is logged once.

The penalty is elementwise, so the op walks each tensor's memory as one flat block: a parameter in any
dense layout (channels_last conv weights on a GPU, whose ``.grad`` is channels_last too) is passed as it
is, with its gradient, anchor and importance, when those have its strides (as
:class:`ssl_bench.blocks.regularizers.QuadraticRegularizer` keeps them). A tensor laid out otherwise is
copied into the parameter's layout for the call (and a gradient copied back): correct, but a copy per step.

Call it after ``loss.backward()`` (or instead of adding the penalty to the loss): the returned value
carries no autograd graph.
"""

from __future__ import annotations

import logging

import torch

from ssl_bench.errors import UserError
from ssl_bench.ops import _ext

log = logging.getLogger(__name__)
_logged = set()


def backend(device: torch.device | str | None = None) -> str:
    """'kernel' when the compiled penalty op is used for tensors on ``device``, 'reference' otherwise. ``device``
    defaults to the GPU when torch sees one: an extension built without CUDA kernels runs the reference there."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "kernel" if _ext.kernels(device) is not None else "reference"


def _check(params, anchors, importances):
    params, anchors, importances = list(params), list(anchors), list(importances)
    if not (len(params) == len(anchors) == len(importances)):
        raise UserError(
            f"quadratic_penalty_: got {len(params)} params, {len(anchors)} anchors and "
            f"{len(importances)} importances; pass one anchor and one importance per parameter"
        )
    for i, (p, a, w) in enumerate(zip(params, anchors, importances)):
        if p.shape != a.shape or p.shape != w.shape:
            raise UserError(
                f"quadratic_penalty_: tensor {i}: param {tuple(p.shape)}, anchor {tuple(a.shape)} "
                f"and importance {tuple(w.shape)} must have the same shape"
            )
    return params, anchors, importances


def _grads(params):
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return [p.grad for p in params]


@torch.no_grad()
def quadratic_penalty_reference(params, anchors, importances, lam: float) -> torch.Tensor:
    """The per-parameter Python loop (oracle and fallback)."""
    params, anchors, importances = _check(params, anchors, importances)
    if not params:
        return torch.zeros(())
    total = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
    for p, g, a, w in zip(params, _grads(params), anchors, importances):
        d = p - a
        g.add_(w * d, alpha=lam)
        total += (w * d * d).sum()
    return total * (0.5 * lam)


@torch.no_grad()
def quadratic_penalty_(params, anchors, importances, lam: float, use_kernel: bool | None = None) -> torch.Tensor:
    """Penalty value (0-dim device tensor) and its gradient added into every ``p.grad``.

    ``use_kernel``: None = the compiled op when built; False = the reference loop; True = require the
    compiled op (UserError if the extension is not built).
    """
    params, anchors, importances = _check(params, anchors, importances)
    ops = _ext.kernels(params[0].device if params else None)
    if use_kernel and ops is None:
        raise UserError(
            "quadratic_penalty_(use_kernel=True) needs the compiled extension ssl_bench._C; "
            "install with `pip install --no-build-isolation -e .`"
        )
    kernel = ops is not None and use_kernel is not False and bool(params)
    name = "kernel" if kernel else "reference"
    if name not in _logged:
        _logged.add(name)
        log.info("ssl_bench.ops.penalty: using the %s implementation", name)
    if not kernel:
        return quadratic_penalty_reference(params, anchors, importances, lam)
    grads = _grads(params)
    dtype, device = params[0].dtype, params[0].device
    for t in params + grads + anchors + importances:
        if t.dtype != dtype or t.device != device:
            raise UserError(
                "quadratic_penalty_: params, grads, anchors and importances must share one dtype "
                f"and device (got {t.dtype} on {t.device}, expected {dtype} on {device})"
            )
    flat: list[list[torch.Tensor]] = [[], [], [], []]
    written_back = []  # (a .grad laid out unlike its parameter, the dense copy the op updates)
    for p, g, a, w in zip(params, grads, anchors, importances):
        ref = p if _dense(p) else p.contiguous()
        if g.stride() != ref.stride():
            written_back.append((g, _like(g, ref)))
            g = written_back[-1][1]
        for out, t in zip(flat, (ref, g, _like(a, ref), _like(w, ref))):
            out.append(t.as_strided((t.numel(),), (1,)))  # the same memory, as the 1-d tensor the op walks
    value = ops.quadratic_penalty_(*flat, float(lam))
    for g, dense in written_back:
        g.copy_(dense)
    return value


def _dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill one block of memory without gaps or overlaps, in any dimension order
    (contiguous, channels_last, any permutation of a contiguous tensor)."""
    expected = 1
    for size, stride in sorted((x for x in zip(t.shape, t.stride()) if x[0] != 1), key=lambda x: x[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` laid out in memory as the dense ``ref`` (same strides): itself when it already is, else a copy."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref).copy_(t)
