"""Replay buffers: fixed-size samples of the training stream, as dataset indices (never images).

Public, for strategy plugins (``replay`` and ``lump`` use them)::

    from ssl_bench.blocks.buffers import StreamBuffer

    self.stream = StreamBuffer(size=500, policy="reservoir")   # in the strategy's __init__
    self.stream.setup(run)                                     # in Strategy.setup
    self.stream.after_phase(run, phase)                        # in Strategy.after_phase: offer the new samples
    index = self.stream.buffer.sample(n, rng)                  # dataset.train indices to replay

:class:`ReplayBuffer` is the sample itself:

- ``policy="reservoir"`` (default): reservoir sampling (Vitter 1985, algorithm R): the buffer
  is a uniform random sample of all samples offered so far;
- ``policy="class"`` / ``"domain"``: class- or domain-balanced reservoir (CBRS, Chrysakis &
  Moens, ICML 2020): while a group is not the largest in the buffer its samples displace a
  random sample of the largest group; within a group that is (or was) the largest, plain
  reservoir sampling.

:class:`StreamBuffer` feeds a :class:`ReplayBuffer` from a run: after each phase the samples of
the experiences it trained on are offered one by one, in a seeded random order, and the
buffer's composition is recorded per phase. Both keep everything, random state included, in
``state_dict()``, so a resumed run continues identically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ssl_bench.errors import UserError

if TYPE_CHECKING:
    from ssl_bench.api import Phase, RunContext

#: how a :class:`ReplayBuffer` chooses what to keep
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

    def _add_reservoir(self, index: np.ndarray, group: np.ndarray) -> None:
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

    def state_dict(self) -> dict[str, Any]:
        return {
            "index": self.index.copy(),
            "group": self.group.copy(),
            "seen": self.seen,
            "seen_per_group": dict(self.seen_per_group),
            "full_groups": sorted(self.full_groups),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index, self.group = np.asarray(state["index"], np.int64), np.asarray(state["group"], np.int64)
        self.seen, self.seen_per_group = state["seen"], dict(state["seen_per_group"])
        self.full_groups = set(state["full_groups"])
        self.rng.bit_generator.state = state["rng"]


class StreamBuffer:
    """A :class:`ReplayBuffer` fed by a run: after each phase it receives the new experiences' samples, or,
    with ``online=True``, every training batch as it is trained on (:meth:`offer`).

    Keeps the per-phase record of the buffer's contents (:meth:`record`, for the result file).
    """

    def __init__(self, size: int, policy: str, seed: int = 0, online: bool = False):
        self.online = online
        self.buffer = ReplayBuffer(size, policy, seed)
        self.added: list[int] = []  #: experiences already offered (a later phase may revisit them)
        self.history: list[dict[str, Any]] = []  #: per phase: size and composition of the buffer
        self._order = np.random.default_rng(seed + 1)

    def setup(self, run: RunContext) -> None:
        """Read the run's labels, domains and experiences (call from ``Strategy.setup``)."""
        train = run.dataset.train
        self.labels, self.domains = train.labels.numpy(), train.domains.numpy()
        self.origin = np.full(len(train), -1, dtype=np.int64)  # experience each train sample belongs to
        for e in run.experiences:
            self.origin[e.train_idx] = e.index
        self.n_classes, self.n_domains, self.n_exp = len(run.dataset.classes), len(run.dataset.domains), len(run.experiences)

    def offer(self, index: np.ndarray) -> None:
        """Online filling: offer the samples of a training batch (indices into ``dataset.train``), in order."""
        index = np.asarray(index, dtype=np.int64)
        group = {"class": self.labels, "domain": self.domains}.get(self.buffer.policy)
        self.buffer.add(index, None if group is None else group[index])

    def after_phase(self, run: RunContext, phase: Phase) -> None:
        """Offer the samples of the phase's experiences not offered before (unless filled online); record the
        buffer's composition."""
        new = [i for i in phase.experiences if i not in self.added]
        if new and self.online:
            self.added += new
        elif new:
            index = np.concatenate([run.experiences[i].train_idx for i in new])
            index = index[self._order.permutation(len(index))]
            group = {"class": self.labels, "domain": self.domains}.get(self.buffer.policy)
            self.buffer.add(index, None if group is None else group[index])
            self.added += new
        idx = self.buffer.index
        self.history.append(
            {
                "size": np.int64(len(idx)),
                "experience": np.bincount(self.origin[idx], minlength=self.n_exp),
                "class": np.bincount(self.labels[idx], minlength=self.n_classes),
                "domain": np.bincount(self.domains[idx], minlength=self.n_domains),
            }
        )

    def record(self) -> dict[str, Any]:
        """The buffer's capacity, policy, fill and composition after every phase, and its final indices."""
        if not self.history:
            return {}
        return {
            "capacity": self.buffer.size,
            "policy": self.buffer.policy,
            "filled": self._stack("size"),
            "composition_per_experience": self._stack("experience"),
            "composition_per_class": self._stack("class"),
            "composition_per_domain": self._stack("domain"),
            "index": self.buffer.index.copy(),
        }

    def _stack(self, key: str) -> np.ndarray:
        return np.stack([h[key] for h in self.history])

    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer": self.buffer.state_dict(),
            "added": list(self.added),
            "history": list(self.history),
            "order": self._order.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.buffer.load_state_dict(state["buffer"])
        self.added, self.history = list(state["added"]), list(state["history"])
        self._order.bit_generator.state = state["order"]
