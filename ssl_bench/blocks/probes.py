"""Building blocks of evaluators: the pooled held-out features, and the linear-probe solver.

Public, for built-in and outside evaluator plugins alike::

    from ssl_bench.blocks.probes import fit_predict, held_out, select_l2

    idx, x, y = held_out(run, features)          # every experience's held-out features, each sample once
    x = embed(run, images, index)                 # the backbone's features, as the engine takes them
    pred = fit_predict(train_x, train_y, test_x)  # logistic regression (L-BFGS), predicted labels
    probe = fit(train_x, train_y, l2=1e-4)        # the same probe, kept: probe.logits(x) (differentiable)
    l2, accs = select_l2(train_x, train_y, [1e-5, 1e-4, 1e-3])  # the L2 strength, on held-out training data
    for s, s_y, q, q_y in episodes(labels, n_way=5, k=5, n_query=15, n_episodes=100, seed=0):  # few-shot
        pred = prototype_predict(x[s], torch.from_numpy(s_y), x[q], n_way=5)

:func:`fit_predict` is the probe of the ``linear`` evaluator (and of ``fewshot``'s ``logreg``
and ``downstream``): full-batch L-BFGS on standardised features, deterministic, no learning
rate to tune, an L2 penalty; :func:`select_l2` chooses its strength as Kornblith et al. do.

Two solvers minimise the same objective with the same L-BFGS (history 20, strong-Wolfe line search,
``max_iter`` iterations at most, stopped when the gradient's largest entry is under 1e-7 or a step changes
the loss or the weights by less than 1e-10), and differ only in arithmetic (``solver=``):

- ``"lbfgs64"`` (the default of these functions, and the probe of ``linear`` up to 0.2.0): float64,
  the gradient by autograd;
- ``"lbfgs32"``: float32, the loss and its gradient written out (one matrix product each way, the bias
  as a last input column, no autograd graph), about half the time per iteration; and since float32 cannot
  resolve changes below about 1e-7 of the loss, fits that have converged stop sooner (on Tiny ImageNet
  features, the strongly regularised ones after about 60-120 iterations instead of 110-200). Fits that have
  not converged after ``max_iter`` iterations (weak L2 on separable features, where the loss keeps falling)
  end at a slightly different point, so accuracies can differ by a few test samples
  (benchmark/RESULTS.md, "Evaluation cost", has the comparison on saved backbones).
:func:`episodes` and :func:`prototype_predict` are few-shot classification (``fewshot`` and ``downstream``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ssl_bench.blocks import augment
from ssl_bench.errors import UserError

if TYPE_CHECKING:
    from ssl_bench.api import Features, RunContext


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run with at most ``n`` intra-op threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: the probe solvers (see the module docstring): name -> dtype of the standardised features and weights
SOLVERS = {"lbfgs64": torch.float64, "lbfgs32": torch.float32}
#: what :func:`select_l2` chooses the L2 strength by
SELECT_BY = ("accuracy", "loss")
#: by loss, :func:`select_l2` stops after this many strengths in a row whose held-out loss is above the best
PATIENCE = 2


def check_options(evaluator: str, solver: str, select_by: str) -> None:
    """One line for an evaluator's probe options that are not :data:`SOLVERS` / :data:`SELECT_BY` values."""
    if solver not in SOLVERS or select_by not in SELECT_BY:
        raise UserError(
            f"{evaluator}: solver must be one of {', '.join(SOLVERS)} and select_by one of {', '.join(SELECT_BY)}; "
            f"got {solver!r}, {select_by!r}"
        )


def fit_predict(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    l2: float = 1e-4,
    max_iter: int = 200,
    solver: str = "lbfgs64",
) -> torch.Tensor:
    """Fit logistic regression on (train_x, train_y) and return predicted labels of test_x.

    Small CPU problems (under a million feature entries) run on one thread: the few hundred
    L-BFGS evaluations of small matrix products are latency-bound, and on a busy 2-core machine
    a 400 x 128 probe took 15 s with 2 threads and 0.4 s with one.
    """
    dtype = _dtype(solver)
    with _small_on_one_thread(train_x):
        classes, y = torch.unique(train_y, return_inverse=True)
        x, (xt,) = _standardise(train_x, [test_x], dtype)
        w, b = _fit_with(solver, x, y, len(classes), l2, max_iter)
        return classes[(xt @ w + b).argmax(1)]


@dataclass
class Probe:
    """A fitted linear probe: standardisation (``mean``, ``std``), ``weight`` [D, C], ``bias`` [C], and the
    original label of each of its C outputs (``classes``). :meth:`logits` is differentiable in ``x``."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    classes: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        p = [t.to(device=x.device, dtype=x.dtype) for t in (self.mean, self.std, self.weight, self.bias)]
        return ((x - p[0]) / p[1]) @ p[2] + p[3]


def fit(train_x: torch.Tensor, train_y: torch.Tensor, l2: float = 1e-4, max_iter: int = 200, solver: str = "lbfgs64") -> Probe:
    """The probe :func:`fit_predict` fits (same standardisation, penalty and solver), returned for reuse."""
    dtype = _dtype(solver)
    with _small_on_one_thread(train_x):
        classes, y = torch.unique(train_y, return_inverse=True)
        mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True) + 1e-6
        x, _ = _standardise(train_x, [], dtype)
        w, b = _fit_with(solver, x, y, len(classes), l2, max_iter)
    return Probe(mean, std, w, b, classes)


def select_l2(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    grid: list[float],
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 200,
    solver: str = "lbfgs64",
    by: str = "accuracy",
) -> tuple[float, list[float]]:
    """The L2 strength of ``grid`` whose probe does best on a held-out part of the training split.

    As Kornblith et al. (Do Better ImageNet Models Transfer Better?, CVPR 2019) choose it: a seeded
    ``val_fraction`` of (train_x, train_y) is held out, a probe is fitted on the rest for every value
    (strongest first, each started from the previous solution), and the value with the best held-out
    score wins (the stronger one on ties). ``by`` is the score: ``"accuracy"`` (Kornblith et al.'s) or
    ``"loss"``, the lowest held-out cross-entropy. Accuracy on a few hundred held-out samples moves in steps of
    one sample, so neighbouring strengths often tie or differ by a sample or two, and a rounding-sized change
    of the features (bf16 instead of float32) can flip the choice and move the probe's test accuracy by points;
    the cross-entropy is continuous in the features, so the choice only moves when two strengths' losses are
    within that change of each other (benchmark/RESULTS.md, "Evaluation cost, v3"). By loss, the walk from strong
    to weak stops once the held-out loss has been above its best at ``PATIENCE`` (2) strengths in a row: early
    stopping along the regularisation path, which skips the weakest strengths' fits, the slowest (they run to
    ``max_iter``), where the loss has clearly turned upwards. Returns (chosen value, held-out accuracy per grid
    value, NaN for values not fitted).
    """
    if by not in SELECT_BY:
        raise UserError(f"L2 selection by '{by}' is not one of {', '.join(SELECT_BY)}")
    dtype = _dtype(solver)
    n = len(train_y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * val_fraction))
    val, fit = order[:n_val], order[n_val:]
    with _small_on_one_thread(train_x):
        classes, y = torch.unique(train_y, return_inverse=True)
        x, (xv,) = _standardise(train_x[fit], [train_x[val]], dtype)
        init, accs, losses = None, {}, {}
        for l2 in sorted(grid, reverse=True):
            init = _fit_with(solver, x, y[fit], len(classes), l2, max_iter, init)
            w, b = init
            logits = xv @ w + b
            accs[l2] = float((logits.argmax(1) == y[val]).double().mean())
            losses[l2] = float(F.cross_entropy(logits.double(), y[val]))
            if by == "loss" and all(loss > min(losses.values()) for loss in list(losses.values())[-PATIENCE:]):
                break  # the last PATIENCE strengths' losses are above the best: the weaker ones are not fitted
    score = accs if by == "accuracy" else {v: -loss for v, loss in losses.items()}
    best = max(score, key=lambda v: score[v])  # max keeps the first (strongest) of equals
    return best, [accs.get(v, float("nan")) for v in grid]


@contextlib.contextmanager
def _small_on_one_thread(x: torch.Tensor) -> Iterator[None]:
    if x.device.type == "cpu" and x.numel() < 1_000_000:
        with _threads(1):
            yield
    else:
        yield


def _dtype(solver: str) -> torch.dtype:
    if solver not in SOLVERS:
        raise UserError(f"probe solver '{solver}' is not one of {', '.join(SOLVERS)}")
    return SOLVERS[solver]


def _standardise(
    train_x: torch.Tensor, others: list[torch.Tensor], dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Features standardised with the training part's mean and std (computed in the features' own precision),
    in ``dtype``."""
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True) + 1e-6
    return ((train_x - mean) / std).to(dtype), [((o - mean) / std).to(dtype) for o in others]


def _fit_with(
    solver: str,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    l2: float,
    max_iter: int,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return (_fit if solver == "lbfgs64" else _fit32)(x, y, n_classes, l2, max_iter, init)


def _lbfgs(params: list[torch.Tensor], max_iter: int) -> torch.optim.LBFGS:
    """Both solvers' full-batch L-BFGS: strong-Wolfe line search, 20 pairs of history, tight tolerances."""
    return torch.optim.LBFGS(
        params,
        lr=1,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )


def _fit(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    l2: float,
    max_iter: int,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of multinomial logistic regression with L2 penalty ``l2 * ||w||^2``, by full-batch L-BFGS."""
    w0, b0 = (
        init
        if init is not None
        else (torch.zeros(x.shape[1], n_classes, dtype=torch.float64), torch.zeros(n_classes, dtype=torch.float64))
    )
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = _lbfgs([w, b], max_iter)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _fit32(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    l2: float,
    max_iter: int,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_fit`'s objective and L-BFGS in float32, with the loss and gradient written out.

    The weights and bias are one [D + 1, C] matrix ``W`` on inputs with a last column of ones, so a step's
    work is ``z = [x, 1] W`` and ``[x, 1]^T (softmax(z) - onehot(y)) / n`` (+ ``2 l2 w``, the bias unpenalised).
    """
    n, d = x.shape
    xa = torch.cat([x.float(), x.new_ones(n, 1, dtype=torch.float32)], 1)
    target = y.view(-1, 1)
    onehot = torch.zeros(n, n_classes, dtype=torch.float32, device=x.device).scatter_(1, target, 1.0)
    decay = torch.ones(d + 1, 1, dtype=torch.float32, device=x.device)
    decay[-1] = 0  # the bias is not penalised
    if init is None:
        W = torch.zeros(d + 1, n_classes, dtype=torch.float32, device=x.device)
    else:
        W = torch.cat([init[0], init[1].view(1, -1)]).float()
    W.grad = torch.zeros_like(W)
    opt = _lbfgs([W], max_iter)

    def closure() -> torch.Tensor:
        z = xa @ W
        top = z.amax(1, keepdim=True)
        e = (z - top).exp_()
        total = e.sum(1, keepdim=True)
        decayed = W * decay
        loss = ((total.log() + top).sum() - z.gather(1, target).sum()) / n + l2 * (decayed * W).sum()
        residual = e.div_(total).sub_(onehot).div_(n)  # softmax(z) - onehot(y), over n
        torch.addmm(decayed, xa.T, residual, beta=2 * l2, out=W.grad)
        return loss

    opt.step(closure)
    return W[:-1].clone(), W[-1].clone()


def embed(run: RunContext, images: torch.Tensor, index: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
    """The backbone's float32 features of ``images[index]`` as :func:`features` takes them (the protocol's
    ``eval.precision`` and ``eval.channels_last``, ``inference_mode``, ``batch_size`` images at a time, default
    ``eval.batch_size``), the backbone in whatever mode the caller set. For evaluators that embed data of their own
    (``downstream``)."""
    backbone = run.method.backbone
    bs = batch_size or run.protocol.eval.batch_size
    bf16 = run.protocol.eval.precision == "bf16"
    nhwc = bf16 or run.protocol.eval.channels_last
    out = []
    with torch.inference_mode(), torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=bf16):
        for s in range(0, len(index), bs):
            x = images[torch.from_numpy(index[s : s + bs])].to(run.device)
            x = augment.prepare(x, run.dataset.resolution)
            if nhwc and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(backbone(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, run.method.feature_dim)  # outside inference mode: a normal tensor


def held_out(run: RunContext, features: Features) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """All experiences' held-out features, each test sample once: (test indices sorted, [n, D] features, labels)."""
    idx = np.concatenate([np.asarray(e.test_idx) for e in run.experiences])
    feats, labels = torch.cat(features.test), torch.cat(features.test_labels)
    if len(idx) != len(feats):
        raise ValueError(f"{len(feats)} held-out features for {len(idx)} test indices")
    idx, first = np.unique(idx, return_index=True)
    pos = torch.from_numpy(first)
    return idx, feats[pos], labels[pos]


def episodes(
    labels: np.ndarray, n_way: int, k: int, n_query: int, n_episodes: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Seeded N-way K-shot episodes over ``labels``: yield (support positions, support class ids 0..n_way-1,
    query positions, query class ids). Per episode: ``n_way`` classes among those with more than ``k``
    samples, then per class ``k`` support and up to ``n_query`` query samples, all distinct."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    eligible = sorted(c for c, pos in by_class.items() if len(pos) > k)
    if len(eligible) < n_way:
        raise UserError(
            f"fewshot: {n_way}-way {k}-shot needs {n_way} classes with more than {k} samples, "
            f"only {len(eligible)} have them; lower n_way or the shots"
        )
    for _ in range(n_episodes):
        sup: list[np.ndarray] = []
        sup_y: list[np.ndarray] = []
        qry: list[np.ndarray] = []
        qry_y: list[np.ndarray] = []
        for new, c in enumerate(rng.choice(eligible, n_way, replace=False)):
            pos = rng.permutation(by_class[c])
            q = pos[k : k + n_query]
            sup.append(pos[:k])
            qry.append(q)
            sup_y.append(np.full(k, new))
            qry_y.append(np.full(len(q), new))
        yield np.concatenate(sup), np.concatenate(sup_y), np.concatenate(qry), np.concatenate(qry_y)


def prototype_predict(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, n_way: int) -> torch.Tensor:
    """Nearest prototype (mean of the L2-normalised support features of a class) by cosine similarity
    (Snell et al., Prototypical Networks for Few-shot Learning, NeurIPS 2017)."""
    support, query = F.normalize(support.double(), dim=1), F.normalize(query.double(), dim=1)
    protos = torch.stack([support[support_y == c].mean(0) for c in range(n_way)])
    return (query @ F.normalize(protos, dim=1).T).argmax(1)
