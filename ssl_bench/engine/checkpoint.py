"""Checkpoint and resume: after every phase the run's state is saved, so an interrupted run continues identically.

The checkpoint (``.<result file name>.ckpt`` next to the result, written atomically) holds the
method, optimiser and strategy state, the step, the losses and metrics so far, the features
of the last phase and the random states. It is used only by a run of the same configuration
(:func:`fingerprint`), and removed once the result is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ssl_bench.api import Features
from ssl_bench.engine.config import RunConfig

if TYPE_CHECKING:
    from ssl_bench.engine.build import Run

log = logging.getLogger(__name__)


def path_for(config: RunConfig) -> Path:
    """Where the run of ``config`` keeps its checkpoint."""
    return config.out / f".{config.result_path.name}.ckpt"


def fingerprint(config: RunConfig) -> str:
    """A hash of the whole configuration: a checkpoint is resumed only by the run that wrote it."""
    return hashlib.sha256(json.dumps(config.to_json(), sort_keys=True, default=str).encode()).hexdigest()


def save(run: Run, path: Path, fingerprint: str, next_phase: int, previous: Features) -> None:
    """Save the run's state after a phase (temporary file + rename)."""
    state = {
        "fingerprint": fingerprint,
        "next_phase": next_phase,
        "step": run.step,
        "images_processed": run.images_processed,
        "losses": run.losses,
        "metrics": run.metrics,
        "init_metrics": run.init_metrics,
        "method": run.method.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "strategy": run.strategy.state_dict(),
        "previous": previous,
        "generator": run.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def resume(run: Run, path: Path, fingerprint: str) -> tuple[int, Features | None]:
    """Restore ``run`` from the checkpoint at ``path`` if it is this configuration's: (phase to start at, last features)."""
    if not path.exists():
        return 0, None
    state = torch.load(path, map_location=run.device, weights_only=False)
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to a different configuration", path)
        return 0, None
    start_phase = _restore(run, state)
    log.info("resuming from checkpoint after phase %d/%d", start_phase, len(run.phases))
    return start_phase, state["previous"]


def _restore(run: Run, state: dict[str, Any]) -> int:
    run.method.load_state_dict(state["method"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.strategy.load_state_dict(state["strategy"])
    run.step, run.losses, run.images_processed = state["step"], state["losses"], state["images_processed"]
    run.metrics, run.init_metrics = state["metrics"], state["init_metrics"]
    run.generator.set_state(state["generator"].to(run.generator.device) if run.device.type != "cpu" else state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return state["next_phase"]
