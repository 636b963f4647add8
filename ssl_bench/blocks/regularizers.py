"""The quadratic parameter regulariser of MAS and EWC: importances, anchors, and the penalty on the gradient.

Public, for strategy plugins. :class:`QuadraticRegularizer` is a :class:`~ssl_bench.api.Strategy`
that, after each phase, asks its subclass for the importance of every parameter
(:meth:`~QuadraticRegularizer.importance`), adds it to the importances of earlier phases
(``decay`` < 1 shrinks the old ones first) and anchors the parameters at their values at the
end of the phase. While later phases train, the penalty
``factor * lam * sum(importance * (theta - theta_anchor)^2)`` pulls the parameters towards their
anchors (``factor`` is a class attribute: 0.5 as in EWC's paper, 1 as in MAS's, so that ``lam``
means what it means in the subclass's paper and values from the literature transfer); its gradient
is written straight into ``.grad`` after the backward pass
(:func:`ssl_bench.ops.penalty.quadratic_penalty_`). A subclass implements only the importance::

    class MyImportance(QuadraticRegularizer):
        name = "mine"

        def importance(self, run, index):   # index: dataset.train indices drawn from the phase
            return {parameter name: tensor}, number of samples used

The estimation runs with the method in eval mode; its buffers (BatchNorm statistics, queues)
are restored afterwards. Importances, anchors, history and the random state are in
``state_dict()``; ``record()`` gives ``importance_norm``, ``importance_max``, ``penalty_mean``
and friends per phase for the result file. For parameters that take plain SGD steps (all of them
under SGD; biases and norms under LARS), an importance so large that SGD would diverge on the penalty
alone is capped (:meth:`QuadraticRegularizer._cap`: a departure from the papers, recorded as
``importance_capped`` and announced by a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ssl_bench.api import Strategy
from ssl_bench.errors import UserError

if TYPE_CHECKING:
    from ssl_bench.api import Phase, RunContext

log = logging.getLogger(__name__)


class QuadraticRegularizer(Strategy):
    """Importances accumulated after each phase, anchors at the phase's end weights, quadratic penalty.

    Subclasses implement :meth:`importance` (returning ``{parameter name: tensor}`` for the
    parameters to protect, and the number of samples used).
    """

    name = "quadratic"
    #: the penalty is ``factor * lam * sum(importance * (theta - anchor)^2)``, as in the subclass's paper
    factor: float = 0.5
    #: under SGD, importances are capped at STABLE times the curvature at which the penalty alone diverges
    STABLE: float = 0.5

    def __init__(self, lam: float = 1.0, samples: int = 512, decay: float = 1.0, chunk: int = 16):
        for key, value, ok in (
            ("lam", lam, isinstance(lam, (int, float)) and lam >= 0),
            ("samples", samples, isinstance(samples, int) and samples > 0),
            ("decay", decay, isinstance(decay, (int, float)) and 0 <= decay <= 1),
            ("chunk", chunk, isinstance(chunk, int) and chunk > 0),
        ):
            if not ok:
                raise UserError(f"{self.name}: bad option {key}={value!r} (lam >= 0, samples > 0, 0 <= decay <= 1, chunk > 0)")
        self.lam, self.samples, self.decay, self.chunk = float(lam), samples, float(decay), chunk
        self.importances: dict[str, torch.Tensor] = {}
        self.anchors: dict[str, torch.Tensor] = {}
        self.history: dict[str, list[Any]] = {
            "importance_norm": [],
            "importance_max": [],
            "importance_samples": [],
            "importance_capped": [],
            "penalty_mean": [],
            "penalty_steps": [],
        }
        self._penalty: torch.Tensor | None = None
        self._steps = 0

    def importance(self, run: RunContext, index: np.ndarray) -> tuple[dict[str, torch.Tensor], int]:
        """``{parameter name: importance}`` for the parameters to protect, estimated on ``dataset.train[index]``,
        and the number of samples it used."""
        raise NotImplementedError

    def setup(self, run: RunContext) -> None:
        from ssl_bench.ops.penalty import quadratic_penalty_  # imported here so listing plugins stays cheap

        self._penalty_fn: Callable[..., torch.Tensor] = quadratic_penalty_
        self.named = dict(run.method.named_parameters())
        self.rng = np.random.default_rng([run.seed, 0x3A5])
        self._bind()

    def _like_param(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` in the memory layout of parameter ``name`` (channels_last conv weights on a GPU), so that the
        penalty op walks importance, anchor, parameter and gradient as one flat block each, without a copy per step."""
        p = self.named[name]
        return value if value.stride() == p.stride() else torch.empty_like(p, dtype=value.dtype).copy_(value)

    def _bind(self) -> None:
        names = [n for n in self.importances if n in self.named and self.named[n].requires_grad]
        self._params = [self.named[n] for n in names]
        self._anchor = [self.anchors[n] for n in names]
        self._imp = [self.importances[n] for n in names]

    def after_backward(self, run: RunContext) -> None:
        if not self._params or self.lam == 0:
            return
        # the op computes 0.5 * l * sum(...) and adds l * importance * (theta - anchor) to the gradients
        value = self._penalty_fn(self._params, self._anchor, self._imp, 2 * self.factor * self.lam)
        self._penalty = value.detach() if self._penalty is None else self._penalty + value.detach()
        self._steps += 1

    def after_phase(self, run: RunContext, phase: Phase) -> None:
        self.history["penalty_mean"].append(float(self._penalty) / self._steps if self._penalty is not None else 0.0)
        self.history["penalty_steps"].append(self._steps)
        self._penalty, self._steps = None, 0
        pool = np.concatenate([run.experiences[i].train_idx for i in phase.experiences])
        index = np.sort(self.rng.choice(pool, min(self.samples, len(pool)), replace=False))
        buffers = {k: v.detach().clone() for k, v in run.method.named_buffers()}  # estimation must not move BN stats or queues
        was_training = run.method.training
        run.method.eval()
        try:
            new, n = self.importance(run, index)
        finally:
            run.method.train(was_training)
            with torch.no_grad():
                for k, v in run.method.named_buffers():
                    v.copy_(buffers[k])
        for name, value in new.items():
            value = value.detach().to(self.named[name].device, torch.float32)
            old = self.importances.get(name)
            self.importances[name] = self._like_param(name, value if old is None else self.decay * old + value)
        self.anchors = {n: self.named[n].detach().clone() for n in self.importances}  # clone keeps the layout
        self._bind()
        capped = self._cap(run)
        flat = torch.cat([v.flatten() for v in self.importances.values()])
        self.history["importance_norm"].append(float(flat.norm()))
        self.history["importance_max"].append(float(flat.max()))
        self.history["importance_samples"].append(n)
        self.history["importance_capped"].append(capped)

    def _cap(self, run: RunContext) -> float:
        """Cap the importances of the parameters that take plain SGD steps where SGD on the penalty alone would
        diverge; the capped fraction of all importances.

        Momentum SGD on ``c/2 * x^2`` oscillates with growing amplitude once ``lr * c > 2 (1 + momentum)``.
        With the penalty's curvature ``2 * factor * lam * importance``, an importance above
        ``STABLE * 2 (1 + momentum) / (lr * 2 * factor * lam)`` makes its parameter diverge whatever the
        data loss does (e.g. ``replay+mas`` on ``smoke``: NaN two dozen steps into the second phase), so
        it is capped there (``STABLE`` = 0.5 leaves room for the data loss's own curvature). This departs
        from the papers, whose penalties have no cap: a capped parameter is held as firmly as the optimiser
        can hold it stably. ``importance_capped`` in the result file is the fraction of entries capped; a
        warning says when any were. Plain SGD steps are taken by every parameter under ``sgd`` and by
        LARS's groups without adaptation (biases and norms, :mod:`ssl_bench.engine.optim`): BYOL + MAS on
        ``tinyimagenet-cpu`` (LARS, lr 1.0, BatchNorm importances up to ~700) went NaN 35 steps into the
        second phase before those were capped. LARS-adapted weights and AdamW bound each step's size
        relative to the weights or to lr, so a stiff penalty cannot blow them up.
        """
        plain = self._plain_sgd(run)
        if self.lam == 0 or not plain or not self.importances:
            return 0.0
        limit = self.STABLE * 2 * (1 + run.recipe.momentum) / (run.peak_lr * 2 * self.factor * self.lam)
        total = sum(v.numel() for v in self.importances.values())
        over = 0
        for name, v in self.importances.items():
            if id(self.named[name]) in plain:
                over += int((v > limit).sum())
                v.clamp_(max=limit)
        if over:
            log.warning(
                "%s: %d of %d importances capped at %.3g, where SGD at lr %.3g would diverge on the penalty "
                "(lower lam or the lr to keep the paper's penalty uncapped)",
                self.name,
                over,
                total,
                limit,
                run.peak_lr,
            )
        return over / total

    @staticmethod
    def _plain_sgd(run: RunContext) -> set[int]:
        """``id`` of every parameter the optimiser moves by plain (momentum) SGD steps."""
        if run.recipe.optimizer not in ("sgd", "lars"):
            return set()
        groups = run.optimizer.param_groups
        return {id(p) for g in groups if run.recipe.optimizer == "sgd" or not g.get("lars", True) for p in g["params"]}

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "lam": self.lam,
            "decay": self.decay,
            "n_parameters": int(sum(v.numel() for v in self.importances.values())),
        }
        out.update({k: np.asarray(v) for k, v in self.history.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "importances": {k: v.cpu() for k, v in self.importances.items()},
            "anchors": {k: v.cpu() for k, v in self.anchors.items()},
            "history": {k: list(v) for k, v in self.history.items()},
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.importances = {k: self._like_param(k, v.to(self.named[k].device)) for k, v in state["importances"].items()}
        self.anchors = {k: self._like_param(k, v.to(self.named[k].device)) for k, v in state["anchors"].items()}
        self.history.update({k: list(v) for k, v in state["history"].items()})
        self.rng.bit_generator.state = state["rng"]
        self._bind()
