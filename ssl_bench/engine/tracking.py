"""Experiment tracking: TensorBoard and Weights & Biases observers of a run (``--log tensorboard[=DIR]``, ``--log wandb``).

Each tracker is an observer plugin (the run-observer hooks of :mod:`ssl_bench.hookspecs`) that the
engine registers for one run. It logs, against the global step: what the evaluators measured on the
random-init backbone, at step 0 (so every curve starts where training starts), the loss and the
learning rate after every step (``train/loss``, ``train/lr``), and after every phase what the evaluators
measured (``linear/acc/mean`` and ``linear/acc/exp0``... for a per-experience metric,
``collapse/auc`` for a number; larger arrays such as spectra are left to the result file).
Neither library is a dependency: a missing one is a one-line error before any data is loaded
(``pip install 'ssl-bench[tensorboard]'`` or ``'ssl-bench[wandb]'``).

TensorBoard writes to ``DIR/<result name>`` (default ``DIR``: ``<--out>/tensorboard``), one
folder per run, and says where when the run starts and ends; W&B logs to its configured project
(``WANDB_PROJECT``, default ``ssl-bench``),
one W&B run per ssl-bench run, named after the result file, with the run's configuration.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ssl_bench import hookimpl
from ssl_bench.errors import UserError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from ssl_bench.api import Phase, RunContext
    from ssl_bench.plan import RunConfig

log = logging.getLogger(__name__)

#: tracker -> (module that must import, extra that installs it)
NEEDS = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def parse(spec: str) -> tuple[str, str | None]:
    """``tensorboard``, ``tensorboard=DIR`` or ``wandb`` -> (tracker, DIR or None)."""
    name, _, where = spec.partition("=")
    if name not in NEEDS:
        raise UserError(f"--log {spec}: unknown tracker '{name}'." + did_you_mean(name, NEEDS))
    if name == "wandb" and where:
        raise UserError("--log wandb takes no folder; set WANDB_PROJECT or WANDB_DIR for W&B")
    return name, where or None


def check(specs: list[str]) -> None:
    """Before any data is loaded: every ``--log`` names a known tracker whose library is installed."""
    for spec in specs:
        name, _ = parse(spec)
        module, extra = NEEDS[name]
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(
                f"--log {name} needs the {extra} package, which is not installed ({err}); "
                f"pip install '{extra}' (or ssl-bench[{extra}])"
            ) from None


def scalars(metrics: dict[str, Any], n_experiences: int) -> dict[str, float]:
    """The loggable numbers of a phase's metrics: numbers as they are, per-experience arrays as mean + one per experience."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        array = np.asarray(value)
        if array.dtype.kind not in "fiub":
            continue
        if array.ndim == 0:
            out[key] = float(array)
        elif array.shape == (n_experiences,):
            out[f"{key}/mean"] = float(array.mean())
            out.update({f"{key}/exp{j}": float(v) for j, v in enumerate(array)})
    return out


class Tracker:
    """The observer hooks shared by the trackers: what is logged, and when; subclasses say where."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.step = 0
        self.init_logged = False

    def log(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and close (the engine calls it when the run ends, however it ends)."""

    @hookimpl
    def ssl_bench_phase_start(self, run: RunContext, phase: Phase) -> None:
        """Before the first step: the random-init evaluation, at step 0 (not again when a run resumes later on)."""
        init = getattr(run, "init_metrics", None)
        if not self.init_logged and init and run.step == 0:
            self.log(scalars(init, len(run.experiences)), 0)
        self.init_logged = True

    @hookimpl
    def ssl_bench_step_end(self, run: RunContext, step: int, loss: float) -> None:
        self.step = step
        self.log({"train/loss": loss, "train/lr": float(run.optimizer.param_groups[0]["lr"])}, step)

    @hookimpl
    def ssl_bench_phase_end(self, run: RunContext, phase: Phase, metrics: dict[str, Any]) -> None:
        self.log(scalars(metrics, len(run.experiences)), self.step)


class TensorBoard(Tracker):
    def __init__(self, config: RunConfig, folder: str | None):
        super().__init__(config)
        from torch.utils.tensorboard import SummaryWriter

        root = Path(folder) if folder else config.out / "tensorboard"
        self.folder = root / config.result_path.stem
        self.writer = SummaryWriter(log_dir=str(self.folder))
        log.info("tensorboard: logging to %s (tensorboard --logdir %s)", self.folder, root)
        self.writer.add_text("config", "```\n" + json.dumps(config.to_json(), indent=1, sort_keys=True, default=str) + "\n```")

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()
        log.info("tensorboard: wrote %s", self.folder)


class WandB(Tracker):
    def __init__(self, config: RunConfig):
        super().__init__(config)
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "ssl-bench"),
            name=config.result_path.stem,
            config=json.loads(json.dumps(config.to_json(), default=str)),
            reinit=True,
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def trackers(config: RunConfig) -> list[Tracker]:
    """The trackers ``config.log`` asks for (:func:`check` has run), ready to be registered as observers."""
    made: list[Tracker] = []
    for spec in config.log:
        name, folder = parse(spec)
        made.append(TensorBoard(config, folder) if name == "tensorboard" else WandB(config))
    return made
