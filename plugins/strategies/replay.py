"""Data replay: a buffer of past training samples mixed into every batch (Hu et al., ICLR 2022).

The buffer stores *indices* into ``dataset.train``, never images, so it is small and goes
into every checkpoint. After each phase the samples of the experiences it trained on are
offered to the buffer one by one, in a seeded random order:

- ``policy="reservoir"`` (default): reservoir sampling (Vitter 1985, algorithm R): the buffer
  is a uniform random sample of all training samples seen so far;
- ``policy="class"`` / ``"domain"``: class- or domain-balanced reservoir (CBRS, Chrysakis &
  Moens, ICML 2020): while a group is not the largest in the buffer its samples displace a
  random sample of the largest group; within a group that is (or was) the largest, plain
  reservoir sampling.

While training, ``ratio`` is the share of every batch that comes from the buffer: a batch of
``B`` current samples gets ``round(B * ratio / (1 - ratio))`` buffer samples appended (drawn
uniformly, without replacement when the buffer is large enough). The first experience has no
past, so it trains on its own samples only.

:class:`ReplayBuffer` is public: other strategies (``lump``) import it from this module.
"""

from __future__ import annotations

import numpy as np
import torch

from ssl_bench import hookimpl
from ssl_bench.api import Batch, Strategy
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"

POLICIES = ("reservoir", "class", "domain")


class ReplayBuffer:
    """A fixed-size sample of a stream of dataset indices (reservoir or group-balanced reservoir).

    ``add(index, group)`` offers samples in order; ``group`` (class or domain ids) is used by
    the balanced policies and kept for the record. ``sample(n)`` draws indices to replay.
    Everything, random state included, is in :meth:`state_dict`.
    """

    def __init__(self, size: int, policy: str = "reservoir", seed: int = 0):
        if not isinstance(size, int) or size < 1:
            raise UserError(f"replay buffer size must be a positive integer, got {size!r}")
        if policy not in POLICIES:
            raise UserError(f"replay policy '{policy}' unknown; choose one of {', '.join(POLICIES)}")
        self.size, self.policy = size, policy
        self.index = np.zeros(0, dtype=np.int64)  #: dataset.train indices in the buffer
        self.group = np.zeros(0, dtype=np.int64)  #: their group (class or domain; 0 for reservoir)
        self.seen = 0  #: samples offered so far
        self.seen_per_group: dict[int, int] = {}
        self.full_groups: set[int] = set()  #: CBRS: groups that are or have been the largest
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, index: np.ndarray, group: np.ndarray | None = None) -> None:
        """Offer the samples ``index`` (in stream order) to the buffer."""
        index = np.asarray(index, dtype=np.int64)
        group = np.zeros_like(index) if group is None else np.asarray(group, dtype=np.int64)
        if self.policy == "reservoir":
            self._add_reservoir(index, group)
        else:
            for i, g in zip(index.tolist(), group.tolist()):
                self._add_balanced(i, g)

    def _add_reservoir(self, index, group):
        free = max(0, min(self.size - len(self.index), len(index)))
        self.index = np.concatenate([self.index, index[:free]])
        self.group = np.concatenate([self.group, group[:free]])
        n = self.seen + free + 1 + np.arange(len(index) - free)  # 1-based stream position of each later sample
        slots = np.floor(self.rng.random(len(n)) * n).astype(np.int64)  # uniform in [0, n)
        for i, g, s in zip(index[free:].tolist(), group[free:].tolist(), slots.tolist()):
            if s < self.size:
                self.index[s], self.group[s] = i, g
        self.seen += len(index)

    def _add_balanced(self, i: int, g: int) -> None:
        self.seen += 1
        self.seen_per_group[g] = self.seen_per_group.get(g, 0) + 1
        if len(self.index) < self.size:
            self.index, self.group = np.append(self.index, i), np.append(self.group, g)
            return
        counts = np.bincount(self.group, minlength=max(int(self.group.max()), g) + 1)
        largest = counts.max()
        self.full_groups.update(np.flatnonzero(counts == largest).tolist())
        if g not in self.full_groups:  # displace a random sample of a largest group
            victim_group = self.rng.choice(np.flatnonzero(counts == largest))
            slot = self.rng.choice(np.flatnonzero(self.group == victim_group))
            self.index[slot], self.group[slot] = i, g
        elif self.rng.random() < counts[g] / self.seen_per_group[g]:  # reservoir within the group
            slot = self.rng.choice(np.flatnonzero(self.group == g))
            self.index[slot] = i

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` buffer indices, uniformly; without replacement when the buffer holds at least ``n``."""
        if len(self.index) == 0 or n <= 0:
            return np.zeros(0, dtype=np.int64)
        pick = rng.choice(len(self.index), size=n, replace=n > len(self.index))
        return self.index[pick]

    def state_dict(self) -> dict:
        return {"index": self.index.copy(), "group": self.group.copy(), "seen": self.seen,
                "seen_per_group": dict(self.seen_per_group), "full_groups": sorted(self.full_groups),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.index, self.group = np.asarray(state["index"], np.int64), np.asarray(state["group"], np.int64)
        self.seen, self.seen_per_group = state["seen"], dict(state["seen_per_group"])
        self.full_groups = set(state["full_groups"])
        self.rng.bit_generator.state = state["rng"]


class StreamBuffer:
    """A :class:`ReplayBuffer` fed by a run: after each phase it receives the new experiences' samples.

    Shared by ``replay`` and ``lump``; keeps the per-phase record of the buffer's contents.
    """

    def __init__(self, size: int, policy: str, seed: int = 0):
        self.buffer = ReplayBuffer(size, policy, seed)
        self.added: list[int] = []  #: experiences already offered (a later phase may revisit them)
        self.history: list[dict[str, np.ndarray]] = []
        self._order = np.random.default_rng(seed + 1)

    def setup(self, run) -> None:
        train = run.dataset.train
        self.labels, self.domains = train.labels.numpy(), train.domains.numpy()
        self.origin = np.full(len(train), -1, dtype=np.int64)  # experience each train sample belongs to
        for e in run.experiences:
            self.origin[e.train_idx] = e.index
        self.n_classes, self.n_domains, self.n_exp = len(run.dataset.classes), len(run.dataset.domains), len(run.experiences)

    def after_phase(self, run, phase) -> None:
        new = [i for i in phase.experiences if i not in self.added]
        if new:
            index = np.concatenate([run.experiences[i].train_idx for i in new])
            index = index[self._order.permutation(len(index))]
            group = {"class": self.labels, "domain": self.domains}.get(self.buffer.policy)
            self.buffer.add(index, None if group is None else group[index])
            self.added += new
        idx = self.buffer.index
        self.history.append({"size": np.int64(len(idx)),
                             "experience": np.bincount(self.origin[idx], minlength=self.n_exp),
                             "class": np.bincount(self.labels[idx], minlength=self.n_classes),
                             "domain": np.bincount(self.domains[idx], minlength=self.n_domains)})

    def record(self) -> dict:
        if not self.history:
            return {}
        stack = lambda key: np.stack([h[key] for h in self.history])
        return {"capacity": self.buffer.size, "policy": self.buffer.policy, "filled": stack("size"),
                "composition_per_experience": stack("experience"), "composition_per_class": stack("class"),
                "composition_per_domain": stack("domain"), "index": self.buffer.index.copy()}

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "added": list(self.added), "history": list(self.history),
                "order": self._order.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.buffer.load_state_dict(state["buffer"])
        self.added, self.history = list(state["added"]), list(state["history"])
        self._order.bit_generator.state = state["order"]


def concat(a: Batch, b: Batch) -> Batch:
    """Two batches as one (current samples first)."""
    return Batch(images=torch.cat([a.images, b.images]), labels=torch.cat([a.labels, b.labels]),
                 domains=torch.cat([a.domains, b.domains]), index=torch.cat([a.index, b.index]))


class Replay(Strategy):
    """Mix ``ratio`` of every batch from a buffer of ``size`` past samples (``policy``: reservoir, class, domain)."""

    name = "replay"

    def __init__(self, size: int = 500, ratio: float = 0.5, policy: str = "reservoir"):
        if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
            raise UserError(f"replay ratio is the share of each batch drawn from the buffer: give 0 <= ratio < 1, got {ratio!r}")
        self.size, self.ratio, self.policy = size, float(ratio), policy
        self.stream = StreamBuffer(size, policy)
        self.replayed: list[int] = []
        self._count = 0

    def setup(self, run):
        self.stream.setup(run)
        self.rng = np.random.default_rng([run.seed, run.rank, 0x5E1A])

    def batch(self, run, batch):
        n = round(len(batch.index) * self.ratio / (1 - self.ratio))
        index = self.stream.buffer.sample(n, self.rng)
        if len(index) == 0:
            return batch
        self._count += len(index)
        return concat(batch, run.batch_of(torch.from_numpy(index)))

    def after_phase(self, run, phase):
        self.stream.after_phase(run, phase)
        self.replayed.append(self._count)
        self._count = 0

    def record(self):
        return {"ratio": self.ratio, "replayed_per_phase": np.asarray(self.replayed, np.int64),
                **self.stream.record()}

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
