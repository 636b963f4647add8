"""Per-sample Fisher diagonal (EWC's importance) without materialising per-sample gradients.

``fisher_diagonal(model, loss_fn)`` runs ``loss_fn()`` once with forward hooks on every
``nn.Linear`` / ``nn.Conv2d``, then one backward that asks autograd only for the gradients of
those layers' OUTPUTS (no weight gradients are computed), and turns (input, output-gradient)
pairs into ``sum_n g_n**2`` per weight/bias entry:

* Linear on ``[N, F]``: ``(grad**2).T @ (x**2)`` (a single matrix product of squares);
* Linear on ``[N, L, F]`` and Conv2d: the per-sample product ``G_n @ U_n`` (U = the input, or its
  unfolded patches for Conv2d) squared and summed over n, computed in chunks of samples so that the
  ``[N, O, K]`` per-sample gradients never exist at once.

Those reductions are the ops ``ssl_bench::fisher_linear`` / ``ssl_bench::fisher_conv2d`` of the
compiled extension (CPU and CUDA kernels) when it is built; otherwise the plain-PyTorch functions
``fisher_linear_reference`` / ``fisher_conv2d_reference`` below compute the same thing. Which one
is used is logged once and reported by ``backend()``.

The per-sample gradient of sample n is its contribution through its own activations: exact when
samples do not interact (eval-mode BatchNorm, per-sample losses). ``loss_fn()`` must return the SUM
over samples of their losses; the result is the MEAN over samples of squared per-sample gradients.

Parameters of other layers (BatchNorm, embeddings, ...): by default (``others="batch"``) they get
the square of the batch-MEAN gradient, ``(sum_n g_n / N)**2``, a lower bound of the mean of
squares (exact for N = 1); ``others="skip"`` leaves them out of the result.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.errors import UserError
from ssl_bench.ops import _ext

log = logging.getLogger(__name__)

_CHUNK_ELEMENTS = 1 << 22  # per-sample [O, K] products held at once (reference path)


_logged = set()


def backend(device: torch.device | str | None = None) -> str:
    """'kernel' when the compiled Fisher ops are used for tensors on ``device``, 'reference' otherwise. ``device``
    defaults to the GPU when torch sees one: an extension built without CUDA kernels runs the reference there."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "kernel" if _ext.kernels(device) is not None else "reference"


def _log_backend(name: str) -> None:
    if name not in _logged:
        _logged.add(name)
        log.info("ssl_bench.ops.fisher: using the %s implementation", name)


# ---------------------------------------------------------------------------------------------
# The two reductions: plain-PyTorch references (oracle and fallback when _C is not built)
# ---------------------------------------------------------------------------------------------


def fisher_linear_reference(grad_out: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """``sum_n (G_n^T X_n)**2`` for a Linear layer: ``[O, F]``.

    ``grad_out`` is ``[N, O]`` or ``[N, L, O]``, ``input`` is ``[N, F]`` or ``[N, L, F]``.
    """
    if grad_out.dim() == 2:
        return grad_out.square().t() @ input.square()
    n, _, o = grad_out.shape
    f = input.shape[-1]
    out = grad_out.new_zeros(o, f)
    step = max(1, _CHUNK_ELEMENTS // max(1, o * f))
    for s in range(0, n, step):
        per = grad_out[s : s + step].transpose(1, 2) @ input[s : s + step]  # [B, O, F]
        out += per.square().sum(0)
    return out


def fisher_conv2d_reference(grad_out, input, kernel_size, stride, padding, dilation) -> torch.Tensor:
    """``sum_n (G_n @ U_n)**2`` for a Conv2d with groups = 1: ``[O, C*kh*kw]``.

    ``grad_out`` is ``[N, O, Ho, Wo]``, ``input`` is ``[N, C, H, W]``; ``U_n`` are the unfolded patches.
    """
    n, o = grad_out.shape[:2]
    k = input.shape[1] * kernel_size[0] * kernel_size[1]
    out = grad_out.new_zeros(o, k)
    step = max(1, _CHUNK_ELEMENTS // max(1, o * k))
    for s in range(0, n, step):
        cols = F.unfold(input[s : s + step], kernel_size, dilation=dilation, padding=padding, stride=stride)
        g = grad_out[s : s + step].flatten(2)  # [B, O, P]
        out += (g @ cols.transpose(1, 2)).square().sum(0)
    return out


def fisher_linear(grad_out: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """Compiled ``ssl_bench::fisher_linear`` when available, else the reference."""
    ops = _ext.kernels(grad_out.device)
    if ops is None:
        return fisher_linear_reference(grad_out, input)
    return ops.fisher_linear(grad_out.contiguous(), input.contiguous())


def fisher_conv2d(grad_out, input, kernel_size, stride, padding, dilation) -> torch.Tensor:
    """Compiled ``ssl_bench::fisher_conv2d`` when available, else the reference."""
    ops = _ext.kernels(grad_out.device)
    if ops is None:
        return fisher_conv2d_reference(grad_out, input, kernel_size, stride, padding, dilation)
    return ops.fisher_conv2d(
        grad_out.contiguous(), input.contiguous(), list(kernel_size), list(stride), list(padding), list(dilation)
    )


# ---------------------------------------------------------------------------------------------
# Whole-model Fisher
# ---------------------------------------------------------------------------------------------


def _conv_args(m: nn.Conv2d, x: torch.Tensor):
    """The (input, padding) the convolution really saw (non-zero padding modes pad explicitly)."""
    if m.padding_mode != "zeros":
        return F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode), (0, 0)
    if isinstance(m.padding, str):  # 'same' / 'valid'
        if m.padding == "valid":
            return x, (0, 0)
        pads = []
        for d, k in zip(m.dilation, m.kernel_size):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        x = F.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
        return x, (0, 0)
    return x, tuple(m.padding)


def _conv_weight_fisher(m: nn.Conv2d, calls, linear_fn, conv_fn) -> torch.Tensor:
    """Sum over samples of squared per-sample weight gradients of a Conv2d, over all its calls."""
    g_ = m.groups
    o, cg = m.out_channels, m.in_channels // g_
    ks, st, dl = tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)
    prepared = [(gr,) + _conv_args(m, x) for x, gr in calls]
    blocks = []
    for j in range(g_):
        og = slice(j * (o // g_), (j + 1) * (o // g_))
        ic = slice(j * cg, (j + 1) * cg)
        if len(prepared) == 1:
            gr, x, pad = prepared[0]
            blocks.append(conv_fn(gr[:, og], x[:, ic], ks, st, pad, dl))
        else:  # several calls: the per-sample gradient sums over calls -> concatenate patches
            gs = [gr[:, og].flatten(2).transpose(1, 2) for gr, _, _ in prepared]
            us = [F.unfold(x[:, ic], ks, dilation=dl, padding=pad, stride=st).transpose(1, 2) for _, x, pad in prepared]
            blocks.append(linear_fn(torch.cat(gs, 1), torch.cat(us, 1)))
    return torch.cat(blocks, 0).view_as(m.weight)


def _linear_weight_fisher(calls, linear_fn) -> torch.Tensor:
    if len(calls) == 1:
        x, gr = calls[0]
        return linear_fn(gr, x)
    xs = [x if x.dim() == 3 else x.unsqueeze(1) for x, _ in calls]
    gs = [g if g.dim() == 3 else g.unsqueeze(1) for _, g in calls]
    return linear_fn(torch.cat(gs, 1), torch.cat(xs, 1))


def fisher_diagonal(model: nn.Module, loss_fn, others: str = "batch", use_kernel: bool | None = None):
    """Mean over samples of squared per-sample gradients: ``({param_name: tensor}, n_samples)``.

    ``loss_fn()`` runs the model on one batch and returns the SUM over samples of their losses.
    ``use_kernel``: None = the compiled ops when built; False = force the PyTorch reference
    reductions; True = require the compiled ops (UserError if the extension is not built).
    """
    if others not in ("batch", "skip"):
        raise UserError(f"fisher_diagonal: others must be 'batch' or 'skip', not {others!r}")
    first = next(model.parameters(), None)
    ops = _ext.kernels(first.device if first is not None else None)
    if use_kernel and ops is None:
        raise UserError(
            "fisher_diagonal(use_kernel=True) needs the compiled extension ssl_bench._C; "
            "install with `pip install --no-build-isolation -e .`"
        )
    kernel = ops is not None and use_kernel is not False
    _log_backend("kernel" if kernel else "reference")
    linear_fn = fisher_linear if kernel else fisher_linear_reference
    conv_fn = fisher_conv2d if kernel else fisher_conv2d_reference

    hooked = [
        m
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d)) and any(p.requires_grad for p in m.parameters(recurse=False))
    ]
    records: dict[nn.Module, list] = {m: [] for m in hooked}

    def forward_hook(module, inputs, output):
        if torch.is_grad_enabled() and output.requires_grad:
            edge = torch.autograd.graph.get_gradient_edge(output)
            records[module].append((inputs[0].detach(), edge))

    handles = [m.register_forward_hook(forward_hook) for m in hooked]
    try:
        loss = loss_fn()
    finally:
        for h in handles:
            h.remove()
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise UserError("fisher_diagonal: loss_fn() must return a scalar tensor (the SUM of per-sample losses)")
    if not loss.requires_grad:
        raise UserError("fisher_diagonal: loss_fn()'s result does not require grad; run the model with grad enabled")

    named = dict(model.named_parameters())
    owned = {id(p) for m in hooked for p in m.parameters(recurse=False)}
    other_params = [(n, p) for n, p in named.items() if p.requires_grad and id(p) not in owned]
    if others == "skip":
        other_params = []
    edges = [e for m in hooked for _, e in records[m]]
    targets = edges + [p for _, p in other_params]
    if not targets:
        raise UserError("fisher_diagonal: the model has no trainable parameter reached by loss_fn()")
    grads = torch.autograd.grad(loss, targets, allow_unused=True)
    edge_grads, other_grads = grads[: len(edges)], grads[len(edges) :]

    n_samples = None
    out: dict[str, torch.Tensor] = {}
    names = {id(p): n for n, p in named.items()}
    i = 0
    for m in hooked:
        calls = []
        for x, _ in records[m]:
            gr = edge_grads[i]
            i += 1
            if gr is not None:
                calls.append((x, gr))
        if not calls:
            continue
        n = calls[0][0].shape[0]
        if any(x.shape[0] != n for x, _ in calls) or (n_samples is not None and n != n_samples):
            raise UserError("fisher_diagonal: every Linear/Conv2d call must see the same batch size")
        n_samples = n
        if isinstance(m, nn.Linear):
            if any(x.dim() not in (2, 3) for x, _ in calls):
                raise UserError("fisher_diagonal: Linear inputs must be [N, F] or [N, L, F]")
            w = _linear_weight_fisher(calls, linear_fn)
            if m.bias is not None:
                b = sum((g if g.dim() == 2 else g.sum(1)) for _, g in calls).square().sum(0)
        else:
            w = _conv_weight_fisher(m, [(x, g) for x, g in calls], linear_fn, conv_fn)
            if m.bias is not None:
                b = sum(g.sum((2, 3)) for _, g in calls).square().sum(0)
        if m.weight.requires_grad:
            out[names[id(m.weight)]] = w.view_as(m.weight)
        if m.bias is not None and m.bias.requires_grad:
            out[names[id(m.bias)]] = b
    if n_samples is None:
        raise UserError(
            "fisher_diagonal: loss_fn() did not run any Linear/Conv2d layer of the model; "
            "the batch size (number of samples) is unknown"
        )
    out = {k: v / n_samples for k, v in out.items()}
    for (name, p), g in zip(other_params, other_grads):
        out[name] = torch.zeros_like(p) if g is None else (g / n_samples).square()
    return out, n_samples


def fisher_diagonal_reference(model: nn.Module, loss_fn_single, inputs, targets=None):
    """Oracle: the mean over samples of squared per-sample gradients of EVERY trainable parameter.

    ``loss_fn_single(model, x, y)`` returns the loss of ONE sample ``x`` (no batch dimension added:
    it is given ``inputs[n:n+1]`` and ``targets[n:n+1]``). A batch-size-1 loop: slow, exact, simple.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    n_samples = inputs.shape[0]
    for n in range(n_samples):
        y = None if targets is None else targets[n : n + 1]
        loss = loss_fn_single(model, inputs[n : n + 1], y)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (name, _), g in zip(params.items(), grads):
            if g is not None:
                out[name] += g.square()
    return {k: v / n_samples for k, v in out.items()}, n_samples


def fisher_diagonal_vmap(model: nn.Module, loss_fn_single, inputs, targets):
    """``torch.func`` vmap(grad) version of the oracle (the speed baseline of the benchmark).

    ``loss_fn_single(model_output_of_one_sample, target_of_one_sample)`` -> scalar.
    """
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def one(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return loss_fn_single(out, y.unsqueeze(0))

    per = vmap(grad(one), in_dims=(None, 0, 0))(params, inputs, targets)
    return {k: v.square().mean(0) for k, v in per.items()}, inputs.shape[0]
