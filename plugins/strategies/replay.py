"""Data replay: a buffer of past training samples mixed into every batch (Hu et al., ICLR 2022).

The buffer (:class:`ssl_bench.blocks.buffers.StreamBuffer`) stores *indices* into ``dataset.train``,
never images, so it is small and goes into every checkpoint. After each phase the samples of
the experiences it trained on are offered to the buffer one by one, in a seeded random order:

- ``policy="reservoir"`` (default): reservoir sampling (Vitter 1985, algorithm R): the buffer
  is a uniform random sample of all training samples seen so far;
- ``policy="class"`` / ``"domain"``: class- or domain-balanced reservoir (CBRS, Chrysakis &
  Moens, ICML 2020): while a group is not the largest in the buffer its samples displace a
  random sample of the largest group; within a group that is (or was) the largest, plain
  reservoir sampling.

While training, ``ratio`` is the share of every batch that comes from the buffer (drawn
uniformly, without replacement when the buffer is large enough). ``mode="replace"`` (default)
keeps the run compute-matched with the sequential run it is compared with: of a batch of ``B``
current samples, ``round(B * ratio)`` are replaced by buffer samples, so every step still trains
on ``B`` images. ``mode="append"`` appends ``round(B * ratio / (1 - ratio))`` buffer samples
instead, so at ``ratio = 0.5`` a step processes twice the images (every result file stores
``images_processed``). The first experience has no past, so it trains on its own samples only.
"""

from __future__ import annotations

import numpy as np
import torch

from ssl_bench import hookimpl
from ssl_bench.api import Batch, Strategy
from ssl_bench.blocks.buffers import StreamBuffer
from ssl_bench.errors import UserError

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"


def concat(a: Batch, b: Batch) -> Batch:
    """Two batches as one (current samples first)."""
    return Batch(
        images=torch.cat([a.images, b.images]),
        labels=torch.cat([a.labels, b.labels]),
        domains=torch.cat([a.domains, b.domains]),
        index=torch.cat([a.index, b.index]),
        host_index=None if a.host_index is None or b.host_index is None else torch.cat([a.host_index, b.host_index]),
    )


class Replay(Strategy):
    """Mix ``ratio`` of every batch from a buffer of ``size`` past samples (``policy``: reservoir, class, domain)."""

    name = "replay"

    def __init__(self, size: int = 500, ratio: float = 0.5, policy: str = "reservoir", mode: str = "replace"):
        if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
            raise UserError(f"replay ratio is the share of each batch drawn from the buffer: give 0 <= ratio < 1, got {ratio!r}")
        if mode not in ("replace", "append"):
            raise UserError(f"replay mode must be 'replace' (compute-matched) or 'append', got {mode!r}")
        self.size, self.ratio, self.policy, self.mode = size, float(ratio), policy, mode
        self.stream = StreamBuffer(size, policy)
        self.replayed: list[int] = []
        self._count = 0

    def setup(self, run):
        self.stream.setup(run)
        self.rng = np.random.default_rng([run.seed, run.rank, 0x5E1A])

    def batch(self, run, batch):
        b = len(batch.index)
        n = round(b * self.ratio) if self.mode == "replace" else round(b * self.ratio / (1 - self.ratio))
        index = self.stream.buffer.sample(n, self.rng)
        if len(index) == 0:
            return batch
        self._count += len(index)
        if self.mode == "replace":
            keep = b - len(index)
            host = None if batch.host_index is None else batch.host_index[:keep]
            batch = Batch(batch.images[:keep], batch.labels[:keep], batch.domains[:keep], batch.index[:keep], host)
        return concat(batch, run.batch_of(torch.from_numpy(index)))

    def after_phase(self, run, phase):
        self.stream.after_phase(run, phase)
        self.replayed.append(self._count)
        self._count = 0

    def record(self):
        return {
            "ratio": self.ratio,
            "mode": self.mode,
            "replayed_per_phase": np.asarray(self.replayed, np.int64),
            **self.stream.record(),
        }

    def state_dict(self):
        return {"stream": self.stream.state_dict(), "replayed": list(self.replayed), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        if state:
            self.stream.load_state_dict(state["stream"])
            self.replayed = list(state["replayed"])
            self.rng.bit_generator.state = state["rng"]


@hookimpl
def ssl_bench_strategies():
    return {"replay": Replay}
