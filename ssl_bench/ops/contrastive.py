"""Contrastive (InfoNCE) losses: the fused operator ``torch.ops.ssl_bench.contrastive`` when the
extension is built, the dense PyTorch references otherwise (``ssl_bench.ops.backend()`` says which).

Under torch.distributed (several processes) every loss compares the local rows with the negatives of
all ranks, gathered by :func:`gather_with_grad` (the gradient flows back to the rank that owns each
row). The fused op ``contrastive_lse`` takes this rank's rows and the gathered columns, so memory per
rank stays O(N·D) there too; the positives' similarities are local and computed in PyTorch.

The fused op (csrc/contrastive.cpp) walks the similarity matrix in tiles, keeps only per-row sums of
exponentials and recomputes the tiles in backward, so memory is O(N·D) instead of O(N²). Its inputs are
L2-normalised here, in PyTorch autograd; the op relies on it (the largest logit is then 1/τ, used as a
fixed shift so each entry costs one exponential). It needs τ >= ``MIN_TEMPERATURE``; below that the
reference is used and a warning says so once.

In training under bf16 autocast the op receives float32 (autocast runs ``F.normalize`` in float32) and keeps it,
by decision (issue 35): the loss is 0.02-0.4% of a SimCLR step's FLOPs in the shipped protocols, so the op's
bf16 tensor-core path would save nothing measurable and would round every similarity to 8 bits. A caller that
passes bf16 tensors gets that path.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ssl_bench.ops import _ext

log = logging.getLogger("ssl_bench.ops")

NT_XENT, INFO_NCE, INFO_NCE_SYMMETRIC, MOCO = 0, 1, 2, 3  # the op's modes
MIN_TEMPERATURE = 1 / 40  # the op's limit: exp(-2/τ) must stay a normal float32
_warned: set[str] = set()


# ---------------------------------------------------------------------------------------- references
def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: the 2N x 2N cosine-similarity matrix with its diagonal masked.

    Row ``i`` has its positive at ``i + N`` (and vice versa); the loss is the mean
    cross-entropy over all 2N rows.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = z @ z.t() / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.arange(2 * n, device=z.device).roll(n)  # row i's positive: i + n, and i - n for the second half
    return F.cross_entropy(logits, target)


def info_nce_reference(q: torch.Tensor, k: torch.Tensor, temperature: float, symmetric: bool = True) -> torch.Tensor:
    """InfoNCE of ``q`` against ``k``: the positive of row i is column i. Symmetric averages both directions."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.t() / temperature
    target = torch.arange(q.shape[0], device=q.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.t(), target)) / 2
    return loss


def moco_info_nce_reference(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: each query against its key (positive) and every entry of ``queue`` (negatives)."""
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.t()
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


# ------------------------------------------------------------------------------- across processes
class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every rank's gradient and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.narrow(0, dist.get_rank() * ctx.rows, ctx.rows)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` from every rank (rank order), differentiable; ``x`` itself outside torch.distributed.

    Every rank must pass the same shape. Each rank's loss is a mean over its own rows, so with
    DistributedDataParallel's gradient averaging the result is the gradient of the global mean."""
    return _GatherWithGrad.apply(x) if _distributed() else x


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def lse_rows_reference(rows: torch.Tensor, cols: torch.Tensor, temperature: float, offset: int = -1) -> torch.Tensor:
    """Per row, the log-sum-exp of ``rows @ cols.T / temperature``, leaving out column ``i + offset`` of row ``i``
    when ``offset >= 0`` (dense: O(rows x cols) memory)."""
    logits = rows @ cols.t() / temperature
    if offset >= 0:
        i = torch.arange(rows.shape[0], device=rows.device)
        logits = logits.index_put((i, i + offset), logits.new_full((), float("-inf")))
    return torch.logsumexp(logits, dim=1)


def lse_rows(rows: torch.Tensor, cols: torch.Tensor, temperature: float, offset: int = -1) -> torch.Tensor:
    """:func:`lse_rows_reference` of L2-normalised ``rows`` and ``cols``, by the fused op when it is built (float32
    result, float64 for float64 inputs; differentiable in both)."""
    if not _use_op(temperature, rows):
        return lse_rows_reference(rows, cols, temperature, offset)
    return torch.ops.ssl_bench.contrastive_lse(rows, cols, 1.0 / temperature, offset)


def _nt_xent_distributed(z1, z2, temperature):
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    rows = torch.cat([z1, z2])  # this rank's 2n rows; the columns are [z1; z2] of every rank, in rank order
    lse = lse_rows(rows, gather_with_grad(rows), temperature, offset=dist.get_rank() * rows.shape[0])
    pos = (z1 * z2).sum(1) / temperature  # the positive of z1[i] is z2[i] (and vice versa): both local
    return (lse - torch.cat([pos, pos])).mean()


def _info_nce_distributed(q, k, temperature, symmetric):
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    pos = (q * k).sum(1) / temperature
    loss = (lse_rows(q, gather_with_grad(k), temperature) - pos).mean()
    if symmetric:
        loss = (loss + (lse_rows(k, gather_with_grad(q), temperature) - pos).mean()) / 2
    return loss


# ------------------------------------------------------------------------------------ public losses
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent (see :func:`nt_xent_reference`), fused when the extension is built.

    Under torch.distributed the negatives are the 2N rows of all ranks."""
    if _distributed():
        return _nt_xent_distributed(z1, z2, temperature)
    if not _use_op(temperature, z1):
        return nt_xent_reference(z1, z2, temperature)
    return contrastive(F.normalize(z1, dim=1), F.normalize(z2, dim=1), None, temperature, NT_XENT)


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float, symmetric: bool = True) -> torch.Tensor:
    """InfoNCE of ``q`` against ``k`` (see :func:`info_nce_reference`), fused when the extension is built.

    Under torch.distributed the candidates of each row are the keys (queries) of all ranks."""
    if _distributed():
        return _info_nce_distributed(q, k, temperature, symmetric)
    if not _use_op(temperature, q):
        return info_nce_reference(q, k, temperature, symmetric)
    mode = INFO_NCE_SYMMETRIC if symmetric else INFO_NCE
    return contrastive(F.normalize(q, dim=1), F.normalize(k, dim=1), None, temperature, mode)


def moco_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE (see :func:`moco_info_nce_reference`), fused when the extension is built.

    The queue already holds keys from every rank (MoCo enqueues gathered keys), so nothing is gathered."""
    if not _use_op(temperature, q):
        return moco_info_nce_reference(q, k, queue, temperature)
    return contrastive(F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1), temperature, MOCO)


def contrastive(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None, temperature: float, mode: int) -> torch.Tensor:
    """The fused op on already L2-normalised inputs; returns the mean loss (differentiable in q, k, queue).

    The op takes one dtype: under autocast the queries and keys may come out of the heads in bfloat16 while a
    queue buffer stays float32, so inputs of mixed dtypes are all promoted to the widest of them."""
    dtypes = {t.dtype for t in (q, k, queue) if t is not None}
    if len(dtypes) > 1:
        wide = functools.reduce(torch.promote_types, sorted(dtypes, key=str))
        q, k = q.to(wide), k.to(wide)
        queue = queue.to(wide) if queue is not None else None
    return torch.ops.ssl_bench.contrastive(q, k, queue, 1.0 / temperature, mode)[0]


def _use_op(temperature: float, x: torch.Tensor) -> bool:
    if not _ext.use_compiled():
        return False
    if temperature < MIN_TEMPERATURE:
        _warn_once(
            "tau",
            f"ssl_bench.ops: temperature {temperature} < {MIN_TEMPERATURE}: the fused contrastive op "
            "does not support it, using the PyTorch reference",
        )
        return False
    if x.device.type == "cuda" and not _ext.has_cuda():
        _warn_once(
            "cuda",
            "ssl_bench.ops: the extension was built without CUDA: contrastive losses on the GPU use "
            "the PyTorch reference (rebuild with SSL_BENCH_CUDA=1)",
        )
        return False
    return x.device.type in ("cpu", "cuda")


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


# ------------------------------------------------------------------- autograd and fake registration
def _fake_forward(q, k, queue, inv_tau, mode):
    rows = 2 * q.shape[0] if mode in (NT_XENT, INFO_NCE_SYMMETRIC) else q.shape[0]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty(()), q.new_empty((rows,), dtype=acc)


def _fake_backward(grad, q, k, queue, lse, inv_tau, mode, queue_grad):
    dqueue = torch.empty_like(queue) if queue_grad and queue is not None else q.new_empty((0,))
    return torch.empty_like(q), torch.empty_like(k), dqueue


def _setup_context(ctx, inputs, output):
    q, k, queue, inv_tau, mode = inputs
    ctx.save_for_backward(q, k, queue, output[1])
    ctx.mark_non_differentiable(output[1])  # lse: saved for backward only
    ctx.inv_tau, ctx.mode = inv_tau, mode


def _backward(ctx, grad_loss, _grad_lse):
    q, k, queue, lse = ctx.saved_tensors
    queue_grad = queue is not None and ctx.needs_input_grad[2]
    dq, dk, dqueue = torch.ops.ssl_bench.contrastive_backward(grad_loss, q, k, queue, lse, ctx.inv_tau, ctx.mode, queue_grad)
    return dq, dk, dqueue if queue_grad else None, None, None


def _fake_lse(rows, cols, inv_tau, offset):
    return rows.new_empty((rows.shape[0],), dtype=torch.float64 if rows.dtype == torch.float64 else torch.float32)


def _fake_lse_backward(grad, rows, cols, lse, inv_tau, offset):
    return torch.empty_like(rows), torch.empty_like(cols)


def _setup_lse(ctx, inputs, output):
    rows, cols, inv_tau, offset = inputs
    ctx.save_for_backward(rows, cols, output)
    ctx.inv_tau, ctx.offset = inv_tau, offset


def _backward_lse(ctx, grad):
    rows, cols, lse = ctx.saved_tensors
    drows, dcols = torch.ops.ssl_bench.contrastive_lse_backward(grad, rows, cols, lse, ctx.inv_tau, ctx.offset)
    return drows, dcols, None, None


if _ext.available():
    torch.library.register_fake("ssl_bench::contrastive_lse")(_fake_lse)
    torch.library.register_fake("ssl_bench::contrastive_lse_backward")(_fake_lse_backward)
    torch.library.register_autograd("ssl_bench::contrastive_lse", _backward_lse, setup_context=_setup_lse)
    torch.library.register_fake("ssl_bench::contrastive")(_fake_forward)
    torch.library.register_fake("ssl_bench::contrastive_backward")(_fake_backward)
    torch.library.register_autograd("ssl_bench::contrastive", _backward, setup_context=_setup_context)
