"""CaSSLe: self-supervised models are continual learners (Fini et al., CVPR 2022).

From the second experience on, a predictor ``g`` (2-layer MLP, trained with the model) maps
the current model's projections ``z = method.project(x)`` of every augmented view to the
projections ``z_old`` that a FROZEN copy of the model from the end of the previous phase gives
for the same view; the distillation loss ``weight * mean_views(-cos(g(z), z_old))`` is added
to the method's loss. Gradients flow into the current model and the predictor, never into
the frozen copy (it is kept in eval mode, without gradients, and replaced only at the end of
the next phase).

Fini et al. use the method's own SSL loss as the distillation loss; a strategy plugin cannot
know every method's loss form, so this plugin uses the negative cosine similarity (their
choice for BYOL/SimSiam-style methods) for all of them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.api import Strategy
from ssl_bench.errors import UserError
from ssl_bench.heads import frozen_copy, mlp

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Fini et al., Self-Supervised Models are Continual Learners, CVPR 2022"


class CaSSLe(Strategy):
    """Predictive distillation to the previous model: ``weight`` of the loss, ``hidden`` width of the predictor."""

    name = "cassle"

    def __init__(self, weight: float = 1.0, hidden: int = 512):
        if not isinstance(weight, (int, float)) or weight < 0:
            raise UserError(f"cassle: weight must be >= 0, got {weight!r}")
        if not isinstance(hidden, int) or hidden < 1:
            raise UserError(f"cassle: hidden must be a positive integer, got {hidden!r}")
        self.weight, self.hidden = float(weight), hidden
        self.frozen: nn.Module | None = None
        self.history: dict[str, list] = {"distill_loss_mean": [], "distill_steps": []}
        self._sum, self._steps = None, 0

    def setup(self, run):
        self._method = method = run.method
        was_training = method.training
        method.eval()
        with torch.no_grad():  # the projection's width, from two blank images
            dim = method.project(torch.zeros(2, 3, run.dataset.resolution, run.dataset.resolution, device=run.device)).shape[1]
        method.train(was_training)
        self.predictor = mlp(dim, self.hidden, dim).to(run.device)
        # trained with the model by the run's optimiser (same learning-rate schedule)
        run.optimizer.add_param_group({"params": list(self.predictor.parameters())})

    def _freeze(self, method):
        return frozen_copy(method).eval()

    def loss(self, run, views, batch):
        if self.frozen is None:
            return None
        with torch.no_grad():
            targets = [self.frozen.project(v) for v in views]
        terms = [
            -F.cosine_similarity(self.predictor(run.method.project(v)), t.detach(), dim=1).mean() for v, t in zip(views, targets)
        ]
        value = self.weight * torch.stack(terms).mean()
        self._sum = value.detach() if self._sum is None else self._sum + value.detach()
        self._steps += 1
        return value

    def after_phase(self, run, phase):
        self.history["distill_loss_mean"].append(float(self._sum) / self._steps if self._steps else float("nan"))
        self.history["distill_steps"].append(self._steps)
        self._sum, self._steps = None, 0
        self.frozen = self._freeze(run.method)

    def record(self):
        return {"weight": self.weight, **{k: np.asarray(v) for k, v in self.history.items()}}

    def state_dict(self):
        return {
            "predictor": self.predictor.state_dict(),
            "history": {k: list(v) for k, v in self.history.items()},
            "frozen": None if self.frozen is None else self.frozen.state_dict(),
        }

    def load_state_dict(self, state):
        if not state:
            return
        self.predictor.load_state_dict(state["predictor"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        if state["frozen"] is not None:
            self.frozen = self._freeze(self._method)
            self.frozen.load_state_dict(state["frozen"])


@hookimpl
def ssl_bench_strategies():
    return {"cassle": CaSSLe}
