"""MAS: Memory Aware Synapses, a label-free parameter regulariser (Aljundi et al., ECCV 2018).

After each phase, the importance of every backbone parameter is the mean over samples of
the absolute gradient of the squared L2 norm of the backbone's representation,
``|d ||f(x)||^2 / d theta|`` (computed per sample, backbone in eval mode, images without
augmentation); it is added to the importances of earlier phases (``decay`` < 1 shrinks the
old ones first). While training later phases the quadratic penalty
``0.5 * lam * sum(importance * (theta - theta_anchor)^2)`` pulls the parameters towards
their values at the end of the previous phase; its gradient is written straight into
``.grad`` after the backward pass (``ssl_bench.ops.penalty.quadratic_penalty_``).
Hu et al. (ICLR 2022) use MAS this way for streaming SSL pre-training.

Default ``lam = 0.1`` (ours: the importances scale with the representation's norm, so lam must
be tuned per protocol, as Aljundi et al. tune their regulariser weight per sequence; on the
built-in ``forgetting`` protocol, lr 0.1, importances reach ~100 and lam = 1 diverges). A warning
says when ``lr * lam * max(importance)`` is too large for SGD to stay stable on the penalty;
``strategy/mas/importance_max`` and ``penalty_mean`` in the result file show how strongly it acted.

:class:`QuadraticRegularizer` is public: ``ewc`` subclasses it with another importance.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from ssl_bench import augment, hookimpl
from ssl_bench.api import Strategy
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Aljundi et al., Memory Aware Synapses: Learning What (not) to Forget, ECCV 2018"

log = logging.getLogger(__name__)


class QuadraticRegularizer(Strategy):
    """Importances accumulated after each phase, anchors at the phase's end weights, quadratic penalty.

    Subclasses implement :meth:`importance` (returning ``{parameter name: tensor}`` for the
    parameters to protect, and the number of samples used).
    """

    name = "quadratic"

    def __init__(self, lam: float = 1.0, samples: int = 512, decay: float = 1.0, chunk: int = 16):
        for key, value, ok in (("lam", lam, isinstance(lam, (int, float)) and lam >= 0),
                               ("samples", samples, isinstance(samples, int) and samples > 0),
                               ("decay", decay, isinstance(decay, (int, float)) and 0 <= decay <= 1),
                               ("chunk", chunk, isinstance(chunk, int) and chunk > 0)):
            if not ok:
                raise UserError(f"{self.name}: bad option {key}={value!r} (lam >= 0, samples > 0, 0 <= decay <= 1, chunk > 0)")
        self.lam, self.samples, self.decay, self.chunk = float(lam), samples, float(decay), chunk
        self.importances: dict[str, torch.Tensor] = {}
        self.anchors: dict[str, torch.Tensor] = {}
        self.history: dict[str, list] = {"importance_norm": [], "importance_max": [], "importance_samples": [],
                                         "penalty_mean": [], "penalty_steps": []}
        self._penalty, self._steps = None, 0

    def importance(self, run, index: np.ndarray) -> tuple[dict[str, torch.Tensor], int]:
        raise NotImplementedError

    def setup(self, run):
        from ssl_bench.ops.penalty import (
            quadratic_penalty_,  # imported here so listing plugins stays cheap
        )

        self._penalty_fn = quadratic_penalty_
        self.named = dict(run.method.named_parameters())
        self.rng = np.random.default_rng([run.seed, 0x3A5])
        self._bind()

    def _bind(self):
        names = [n for n in self.importances if n in self.named and self.named[n].requires_grad]
        self._params = [self.named[n] for n in names]
        self._anchor = [self.anchors[n] for n in names]
        self._imp = [self.importances[n] for n in names]

    def after_backward(self, run):
        if not self._params or self.lam == 0:
            return
        value = self._penalty_fn(self._params, self._anchor, self._imp, self.lam)
        self._penalty = value.detach() if self._penalty is None else self._penalty + value.detach()
        self._steps += 1

    def after_phase(self, run, phase):
        self.history["penalty_mean"].append(float(self._penalty) / self._steps if self._steps else 0.0)
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
            self.importances[name] = value if old is None else self.decay * old + value
        self.anchors = {n: self.named[n].detach().clone() for n in self.importances}
        self._bind()
        flat = torch.cat([v.flatten() for v in self.importances.values()])
        self.history["importance_norm"].append(float(flat.norm()))
        self.history["importance_max"].append(float(flat.max()))
        self.history["importance_samples"].append(n)
        # SGD on the penalty alone oscillates when lr * lam * importance exceeds 2 (1 + momentum): say so
        tr = run.protocol.train
        limit = 2 * (1 + (tr.momentum if tr.optimizer == "sgd" else 0.0))
        stiffness = tr.lr * self.lam * float(flat.max())
        if stiffness > limit:
            log.warning("%s: lr * lam * max importance = %.3g > %.3g: the penalty is too stiff for the learning rate and "
                        "will make the weights oscillate; lower lam below %.3g", self.name, stiffness, limit,
                        limit / (tr.lr * float(flat.max())))

    def record(self):
        out = {"lam": self.lam, "decay": self.decay, "n_parameters": int(sum(v.numel() for v in self.importances.values()))}
        out.update({k: np.asarray(v) for k, v in self.history.items()})
        return out

    def state_dict(self):
        return {"importances": {k: v.cpu() for k, v in self.importances.items()},
                "anchors": {k: v.cpu() for k, v in self.anchors.items()},
                "history": {k: list(v) for k, v in self.history.items()}, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        if not state:
            return
        self.importances = {k: v.to(self.named[k].device) for k, v in state["importances"].items()}
        self.anchors = {k: v.to(self.named[k].device) for k, v in state["anchors"].items()}
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.rng.bit_generator.state = state["rng"]
        self._bind()


def mas_importance(backbone: torch.nn.Module, images: torch.Tensor, chunk: int = 16) -> dict[str, torch.Tensor]:
    """Mean over ``images`` (float, normalised) of ``|d ||backbone(x)||^2 / d theta|``, one gradient per sample."""
    params = {k: v.detach() for k, v in backbone.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in backbone.named_buffers()}

    def sq_norm(p, x):
        return functional_call(backbone, (p, buffers), (x.unsqueeze(0),)).pow(2).sum()

    per_sample = vmap(grad(sq_norm), in_dims=(None, 0))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for s in range(0, len(images), chunk):
        for k, g in per_sample(params, images[s:s + chunk]).items():
            total[k] += g.abs().sum(0)
    return {k: v / max(1, len(images)) for k, v in total.items()}


class MAS(QuadraticRegularizer):
    """MAS on the backbone's parameters: ``lam`` (penalty weight), ``samples`` per phase for the importance."""

    name = "mas"

    def __init__(self, lam: float = 0.1, samples: int = 512, decay: float = 1.0, chunk: int = 16):
        super().__init__(lam=lam, samples=samples, decay=decay, chunk=chunk)

    def importance(self, run, index):
        backbone = run.method.backbone
        prefix = next(n for n, m in run.method.named_modules() if m is backbone)
        images = augment.prepare(run.dataset.train.images[torch.from_numpy(index)].to(run.device), run.dataset.resolution)
        imp = mas_importance(backbone, images, self.chunk)
        return {f"{prefix}.{k}": v for k, v in imp.items()}, len(index)


@hookimpl
def ssl_bench_strategies():
    return {"mas": MAS}
