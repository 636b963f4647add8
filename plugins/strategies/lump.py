"""LUMP: Lifelong Unsupervised Mixup (Madaan et al., Representational Continuity for Unsupervised Continual Learning, ICLR 2022).

Every training batch of a later experience is mixed with as many samples drawn from a buffer
of past samples: each augmented view becomes ``lam * x_current + (1 - lam) * x_buffer``, with
one ``lam ~ Beta(alpha, alpha)`` per batch (``alpha = 0.4``, the paper's value) shared by all
views, so the SSL loss sees interpolations between the current and the past distribution. The
buffer samples are augmented like the current ones (their own random views, at the same
resolution). The first experience has no buffer and trains unchanged.

The buffer is :class:`ssl_bench.blocks.buffers.StreamBuffer`, as replay's (reservoir by default),
checkpointed and recorded like replay's. ``fill="step"`` (default) fills it online as the
reference code (UCL, Madaan et al.) does: after every step's partners are drawn, the step's own
samples are offered to the reservoir, so mixup starts within experience 0, with its earlier
samples. ``fill="phase"`` offers each experience's samples after its phase instead (then
experience 0 trains without mixup). LUMP mixes unlabelled images, so methods that train on
labels are refused (their labels would not mix).
"""

from __future__ import annotations

import numpy as np
import torch

from ssl_bench import hookimpl
from ssl_bench.api import Strategy
from ssl_bench.blocks.buffers import StreamBuffer
from ssl_bench.errors import UserError

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "Madaan et al., Representational Continuity for Unsupervised Continual Learning, ICLR 2022"


class LUMP(Strategy):
    """Mixup of current and buffer samples: ``size`` of the buffer, ``alpha`` of Beta(alpha, alpha), ``policy``."""

    name = "lump"

    def __init__(self, size: int = 500, alpha: float = 0.4, policy: str = "reservoir", fill: str = "step"):
        if not isinstance(alpha, (int, float)) or alpha <= 0:
            raise UserError(f"lump: alpha must be > 0, got {alpha!r}")
        if fill not in ("step", "phase"):
            raise UserError(f"lump: fill must be 'step' (online, as the reference) or 'phase', got {fill!r}")
        self.alpha, self.fill = float(alpha), fill
        self.stream = StreamBuffer(size, policy, online=fill == "step")
        self.lams: list[float] = []
        self.history: dict[str, list] = {"mixed_steps": [], "lam_mean": []}

    def setup(self, run):
        if run.method.uses_labels:
            raise UserError(f"lump mixes unlabelled images; method '{run.config.method}' trains on labels, use replay instead")
        self.stream.setup(run)
        self.rng = np.random.default_rng([run.seed, run.rank, 0x1A3B])

    def views(self, run, views, batch):
        index = self.stream.buffer.sample(len(views[0]), self.rng)
        if self.fill == "step":  # this step's samples become mixup partners of the later steps
            host = batch.host_index if batch.host_index is not None else batch.index.cpu()  # the engine's: no wait
            self.stream.offer(host.numpy())
        if len(index) == 0:
            return views
        past = run.views(run.batch_of(torch.from_numpy(index)).images, views[0].shape[-1])
        lam = float(self.rng.beta(self.alpha, self.alpha))
        self.lams.append(lam)
        return [lam * v + (1 - lam) * p.to(v.dtype) for v, p in zip(views, past)]

    def after_phase(self, run, phase):
        self.stream.after_phase(run, phase)
        self.history["mixed_steps"].append(len(self.lams))
        self.history["lam_mean"].append(float(np.mean(self.lams)) if self.lams else float("nan"))
        self.lams = []

    def record(self):
        return {
            "alpha": self.alpha,
            "fill": self.fill,
            **{k: np.asarray(v) for k, v in self.history.items()},
            **self.stream.record(),
        }

    def state_dict(self):
        return {
            "stream": self.stream.state_dict(),
            "history": {k: list(v) for k, v in self.history.items()},
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state):
        if state:
            self.stream.load_state_dict(state["stream"])
            self.history = {k: list(v) for k, v in state["history"].items()}
            self.rng.bit_generator.state = state["rng"]


@hookimpl
def ssl_bench_strategies():
    return {"lump": LUMP}
