"""What a run cost, phase by phase: seconds, images per second, FLOPs and peak memory (:class:`Cost`).

The loop times every phase's training steps and every evaluation (the features and each evaluator, at
initialisation, after every phase and at the end); the checkpoint keeps what was measured, so after a resume
every number covers the whole run. :meth:`Cost.arrays` gives the ``cost/`` datasets of the result file (layout
in :mod:`ssl_bench.results.file`); :func:`ssl_bench.results.continual.cost_summary` reads them back.

- Seconds are wall-clock (``time.perf_counter``); training also in CPU seconds of the process
  (``time.process_time``, all its threads), which a busy machine inflates less.
- FLOPs of a training step are measured, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` counts the
  first step of every phase at every resolution it trains at (forward and backward of the method's loss and
  the strategy's term; the optimiser's elementwise update and ops without a FLOP formula, such as the fused
  contrastive loss, count 0), times the number of processes (torchrun); a phase's training FLOPs are each
  resolution's step FLOPs times its steps. Under ``--compile`` nothing is counted (NaN): the compiled step runs
  outside the counter's reach.
- Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the phase (reset at its start); elsewhere the
  process's peak resident set size up to the phase's end (``resource.getrusage``), which includes the dataset
  held in memory and, being a process peak, never decreases within a process.
"""

from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from ssl_bench.engine.build import Run


class Cost:
    """The measured cost of one run so far (rank 0's evaluation; every rank times its own training)."""

    def __init__(self, n_phases: int, resolutions: list[int]):
        self.resolutions = sorted(set(resolutions))
        nan = [math.nan] * n_phases
        self.seconds_before = 0.0  #: wall seconds of the run in processes before this one (resumed runs)
        self.train_seconds, self.train_cpu_seconds = list(nan), list(nan)
        self.train_images = [0] * n_phases
        self.peak_memory = [0] * n_phases
        #: per phase, per resolution: FLOPs of one step (NaN: not measured) and the steps at that resolution
        self.step_flops = [[math.nan] * len(self.resolutions) for _ in range(n_phases)]
        self.steps_at = [[0] * len(self.resolutions) for _ in range(n_phases)]
        #: evaluation seconds per point (0 = init, i + 1 = after phase i): "features" and each evaluator
        self.eval_seconds: dict[str, list[float]] = {}
        self.end_seconds: dict[str, float] = {}
        self._started = time.perf_counter()
        self._counted: set[int] = set()

    # ------------------------------------------------------------------------------------------ measuring
    def elapsed(self) -> float:
        """Wall seconds of the whole run so far, over all its processes."""
        return self.seconds_before + time.perf_counter() - self._started

    @contextlib.contextmanager
    def phase(self, run: Run, index: int) -> Iterator[None]:
        """Time the training of phase ``index`` (around :func:`ssl_bench.engine.loop.train_phase`)."""
        if run.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(run.device)
        images = run.images_processed
        self._counted = set()
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.train_seconds[index] = time.perf_counter() - wall
        self.train_cpu_seconds[index] = time.process_time() - cpu
        self.train_images[index] = run.images_processed - images
        self.peak_memory[index] = peak_memory(run.device)

    def count_step(self, run: Run, resolution: int) -> contextlib.AbstractContextManager:
        """Around one training step at ``resolution``: counts its FLOPs if it is the phase's first at it."""
        index = run.phase_index
        r = self.resolutions.index(resolution) if resolution in self.resolutions else None
        if r is None:  # a resolution outside the protocol's stages: timed, not counted
            return contextlib.nullcontext()
        self.steps_at[index][r] += 1
        if r in self._counted or run.config.compile:
            return contextlib.nullcontext()
        self._counted.add(r)
        return _counting(self, index, r, run.world_size)

    @contextlib.contextmanager
    def evaluation(self, name: str, point: int, n_points: int) -> Iterator[None]:
        """Time the evaluation ``name`` ("features" or an evaluator) at ``point`` (0: init; -1: the end)."""
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        if point < 0:
            self.end_seconds[name] = self.end_seconds.get(name, 0.0) + seconds
        else:
            self.eval_seconds.setdefault(name, [math.nan] * n_points)[point] = seconds

    # ------------------------------------------------------------------------------------------ keeping
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (plain lists and numbers), with the seconds elapsed up to now."""
        state = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        state["seconds_before"] = self.elapsed()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key in vars(self) and not key.startswith("_"):
                setattr(self, key, value)
        self._started = time.perf_counter()

    def arrays(self) -> dict[str, Any]:
        """The ``cost/`` datasets of the result file (see :mod:`ssl_bench.results.file`)."""
        flops = np.asarray(self.step_flops, dtype=np.float64).reshape(len(self.train_seconds), len(self.resolutions))
        steps = np.asarray(self.steps_at, dtype=np.int64).reshape(flops.shape)
        seconds = np.asarray(self.train_seconds, dtype=np.float64)
        images = np.asarray(self.train_images, dtype=np.int64)
        out: dict[str, Any] = {
            "cost/train_seconds": seconds,
            "cost/train_cpu_seconds": np.asarray(self.train_cpu_seconds, dtype=np.float64),
            "cost/train_images": images,
            "cost/images_per_second": np.divide(images, seconds, out=np.full_like(seconds, math.nan), where=seconds > 0),
            "cost/resolutions": np.asarray(self.resolutions, dtype=np.int64),
            "cost/steps_at_resolution": steps,
            "cost/step_flops": flops,
            # a resolution a phase never trained at adds nothing (its step FLOPs are NaN, its steps 0)
            "cost/train_flops": np.where(steps > 0, flops * steps, 0.0).sum(axis=1),
            "cost/peak_memory_bytes": np.asarray(self.peak_memory, dtype=np.int64),
        }
        for name, values in self.eval_seconds.items():
            out[f"cost/eval_seconds/{name}"] = np.asarray(values, dtype=np.float64)
        for name, value in self.end_seconds.items():
            out[f"cost/end_seconds/{name}"] = np.float64(value)
        return out


@contextlib.contextmanager
def _counting(cost: Cost, phase: int, r: int, world_size: int) -> Iterator[None]:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        yield
    cost.step_flops[phase][r] = float(counter.get_total_flops()) * world_size


def peak_memory(device: torch.device) -> int:
    """Peak memory in bytes: CUDA's max allocated since the last reset, else the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
