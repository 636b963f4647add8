"""The engine: a strategy trains a method through a stream's experiences; evaluators measure each phase.

``execute(config, registry)`` builds a :class:`Run` from a protocol and the named plugins,
trains it phase by phase (checkpointing after each, so a crashed run resumes), evaluates
the frozen backbone after every phase and writes one result file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import ssl_bench
from ssl_bench import augment, continual, distributed, results
from ssl_bench.api import Batch, Dataset, Evaluator, Experience, Features, Method, Phase, Strategy
from ssl_bench.errors import UserError
from ssl_bench.optim import lr_at, make_optimizer
from ssl_bench.protocol import Protocol
from ssl_bench.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """What the user chose: the protocol plus the plugins and options of one run."""

    protocol: Protocol
    method: str
    stream: str
    strategy: str  #: one name or several joined by "+"
    seed: int
    out: Path
    method_options: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, Any] = field(default_factory=dict)  #: "name.key" or "key" -> value
    stream_options: dict[str, Any] = field(default_factory=dict)  #: over the protocol's [stream.options.<name>]
    data_root: str | None = None
    download: bool = False
    device: str = "auto"
    plugins: list[str] = field(default_factory=list)
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(protocol=self.protocol.model_dump(mode="json"), protocol_hash=self.protocol.hash, out=str(self.out))
        del d["progress"]
        return d

    @property
    def result_path(self) -> Path:
        return self.out / results.result_name(self.protocol.label, self.method, self.stream, self.strategy, self.seed)


def _construct(entry, *args, **kwargs):
    """Call a plugin factory; bad options become a one-line error naming the plugin."""
    try:
        return entry.factory(*args, **kwargs)
    except TypeError as err:
        if "argument" in str(err):
            raise UserError(f"{entry.kind} '{entry.name}' (plugin {entry.plugin.name}): {err}") from None
        raise


class Composite(Strategy):
    """Several strategies applied together (``--strategy replay+mas``), in the order given."""

    def __init__(self, parts: list[Strategy]):
        self.parts = parts
        self.name = "+".join(p.name for p in parts)

    def plan(self, experiences, steps):
        plans = [(p.name, p.plan(experiences, steps)) for p in self.parts]
        plans = [(n, pl) for n, pl in plans if pl is not None]
        if len(plans) > 1:
            raise UserError(f"strategies {' and '.join(n for n, _ in plans)} both plan the phases; combine at most one of them with others")
        return plans[0][1] if plans else None

    def setup(self, run):
        for p in self.parts:
            p.setup(run)

    def before_phase(self, run, phase):
        for p in self.parts:
            p.before_phase(run, phase)

    def batch(self, run, batch):
        for p in self.parts:
            batch = p.batch(run, batch)
        return batch

    def views(self, run, views, batch):
        for p in self.parts:
            views = p.views(run, views, batch)
        return views

    def loss(self, run, views, batch):
        terms = [t for t in (p.loss(run, views, batch) for p in self.parts) if t is not None]
        return sum(terms) if terms else None

    def after_backward(self, run):
        for p in self.parts:
            p.after_backward(run)

    def after_phase(self, run, phase):
        for p in self.parts:
            p.after_phase(run, phase)

    def record(self):
        out = {}
        for p in self.parts:
            out.update({f"{p.name}/{k}": v for k, v in p.record().items()})
        return out

    def state_dict(self):
        return {p.name: p.state_dict() for p in self.parts}

    def load_state_dict(self, state):
        for p in self.parts:
            p.load_state_dict(state.get(p.name, {}))


def load_data(config: RunConfig, registry: Registry) -> tuple[Dataset, list[Experience]]:
    """The protocol's dataset and the chosen stream's experiences (also used by ``ssl-bench stream-export``)."""
    protocol = config.protocol
    ds = protocol.dataset
    log.info("loading dataset %s at %d px", ds.name, ds.resolution)
    dataset = _construct(registry.get("dataset", ds.name), root=config.data_root or ds.root,
                         resolution=ds.resolution, seed=ds.seed, download=config.download, **ds.options)
    stream_opts = {**protocol.stream.options.get(config.stream, {}), **config.stream_options}
    experiences = _construct(registry.get("stream", config.stream), dataset,
                             n_experiences=protocol.stream.n_experiences, seed=config.seed, **stream_opts)
    if not experiences or any(len(e.train_idx) == 0 or len(e.test_idx) == 0 for e in experiences):
        raise UserError(f"stream '{config.stream}' produced an empty experience; use fewer experiences or more data")
    for e in experiences:
        if e.info:
            log.info("stream %s, experience %d: %s", config.stream, e.index,
                     ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in e.info.items()
                               if np.ndim(v) == 0))
    return dataset, experiences


class Run:
    """Everything one run holds. Plugins receive it in their hooks and strategy callbacks."""

    def __init__(self, config: RunConfig, registry: Registry):
        self.config = config
        self.protocol = protocol = config.protocol
        self.registry = registry
        self.seed = config.seed
        self.device = torch.device(_pick_device(distributed.setup(config.device)))
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 1_000_003 * self.rank)

        self.dataset: Dataset
        self.experiences: list[Experience]
        self.dataset, self.experiences = load_data(config, registry)

        backbone = _construct(registry.get("backbone", protocol.backbone.name), **protocol.backbone.options)
        self.method: Method = _construct(registry.get("method", config.method), backbone, **config.method_options).to(self.device)
        self.model = distributed.wrap(self.method)  #: what training calls: the method, or DDP around it
        self.strategy: Strategy = self._make_strategy(config.strategy, config.strategy_options)
        self.evaluators: list[Evaluator] = [_construct(registry.get("evaluator", name), **protocol.eval.options.get(name, {}))
                                            for name in protocol.eval.evaluators]
        if protocol.eval.primary not in protocol.eval.evaluators:
            raise UserError(f"protocol eval.primary '{protocol.eval.primary}' is not among eval.evaluators")
        self.augment = augment.Augment(protocol.augment.recipe, **protocol.augment.options)

        tr = protocol.train
        self.steps_per_experience = [max(1, math.ceil(tr.epochs_per_experience * len(e.train_idx) / tr.batch_size))
                                     for e in self.experiences]
        self.phases: list[Phase] = self.strategy.plan(self.experiences, self.steps_per_experience) or [
            Phase(name=f"experience {e.index}", experiences=[e.index], steps=s)
            for e, s in zip(self.experiences, self.steps_per_experience)]
        self.total_steps = sum(p.steps for p in self.phases)
        self.optimizer = make_optimizer([p for p in self.method.parameters() if p.requires_grad], tr)
        self.step = 0
        self.phase_index = -1
        self.losses: list[float] = []
        self.metrics: dict[str, list] = {}
        self.init_metrics: dict[str, Any] = {}
        self.end_metrics: dict[str, Any] = {}
        self._eval_index = self._probe_indices()
        self.strategy.setup(self)
        for ev in self.evaluators:  # evaluators check their options and data now, not after training
            ev.setup(self)

    def _make_strategy(self, spec: str, options: dict[str, Any]) -> Strategy:
        names = [s for s in spec.split("+") if s]
        if not names:
            raise UserError("--strategy is empty; give a name such as 'sequential' or 'replay+mas'")
        parts = []
        for name in names:
            own = {k.split(".", 1)[1]: v for k, v in options.items() if k.startswith(name + ".")}
            if len(names) == 1:
                own.update({k: v for k, v in options.items() if "." not in k})
            parts.append(_construct(self.registry.get("strategy", name), **own))
        unknown = [k for k in options if "." in k and k.split(".", 1)[0] not in names]
        if unknown:
            raise UserError(f"--strategy-opt {unknown[0]}: no strategy '{unknown[0].split('.')[0]}' in '{spec}'")
        return parts[0] if len(parts) == 1 else Composite(parts)

    # ----------------------------------------------------------------- data
    def batch_of(self, index: torch.Tensor) -> Batch:
        """The training samples at ``index`` (indices into dataset.train) as a Batch on the device."""
        train = self.dataset.train
        index = index.cpu()
        # numpy's row gather is ~100x faster than torch's uint8 indexing on CPU (benchmark/test_bench_cache.py)
        images = torch.from_numpy(train.images.numpy()[index.numpy()])
        return Batch(images=images.to(self.device, non_blocking=True),
                     labels=train.labels[index].to(self.device), domains=train.domains[index].to(self.device),
                     index=index.to(self.device))

    def phase_pool(self, phase: Phase) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([self.experiences[i].train_idx for i in phase.experiences]))

    def views(self, images: torch.Tensor, size: int | None = None) -> list[torch.Tensor]:
        """Augmented, normalised views of a uint8 batch for the current method."""
        return self.augment(images, self.method.n_views, size or self.dataset.resolution, self.generator)

    def resolution_at(self, step_in_phase: int, steps: int) -> int:
        """The S3L schedule: the resolution of the stage that this step of the phase falls in."""
        stages = self.protocol.train.stages
        if not stages:
            return self.dataset.resolution
        t, acc = step_in_phase / steps, 0.0
        for stage in stages:
            acc += stage.fraction
            if t < acc - 1e-9:
                return stage.resolution
        return stages[-1].resolution

    # ----------------------------------------------------------------- training
    def train_phase(self, phase: Phase, bar) -> None:
        tr = self.protocol.train
        pool = self.phase_pool(phase)
        order = torch.Generator().manual_seed(self.seed * 1_000_003 + self.phase_index)
        perm, pos = torch.randperm(len(pool), generator=order), 0
        hook = self.registry.observers()
        self.method.train()
        for k in range(phase.steps):
            if pos + tr.batch_size > len(perm):  # a new epoch: reshuffle (the last partial batch is dropped)
                perm, pos = torch.randperm(len(pool), generator=order), 0
            index = pool[perm[pos:pos + min(tr.batch_size, len(pool))]][self.rank::self.world_size]
            pos += tr.batch_size
            batch = self.strategy.batch(self, self.batch_of(index))
            views = self.strategy.views(self, self.views(batch.images, self.resolution_at(k, phase.steps)), batch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, self.total_steps, tr)
            loss = self.model(views, batch.labels if self.method.uses_labels else None)
            extra = self.strategy.loss(self, views, batch)
            total = loss if extra is None else loss + extra
            if not torch.isfinite(total):
                raise FloatingPointError(f"loss became {total.item()} at step {self.step} (phase '{phase.name}'); lower the learning rate")
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.strategy.after_backward(self)
            self.optimizer.step()
            self.step += 1
            self.method.after_step(self.step / self.total_steps)
            value = float(total.detach())
            self.losses.append(value)
            hook.ssl_bench_step_end(run=self, step=self.step, loss=value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)

    # ----------------------------------------------------------------- evaluation
    def _probe_indices(self) -> list[np.ndarray]:
        """Per experience, the labelled training samples that probes are fitted on (fixed per seed)."""
        cap = self.protocol.eval.probe_train_per_experience
        rng = np.random.default_rng(self.seed + 7919)
        return [np.sort(rng.choice(e.train_idx, cap, replace=False)) if 0 < cap < len(e.train_idx) else e.train_idx
                for e in self.experiences]

    @torch.no_grad()
    def features(self) -> Features:
        """Frozen-backbone features of every experience's probe-training and held-out samples."""
        backbone = self.method.backbone
        was_training = backbone.training
        backbone.eval()
        bs = self.protocol.eval.batch_size

        def embed(images: torch.Tensor, index: np.ndarray) -> torch.Tensor:
            out = []
            for s in range(0, len(index), bs):
                x = images[torch.from_numpy(index[s:s + bs])].to(self.device)
                out.append(backbone(augment.prepare(x, self.dataset.resolution)).float().cpu())
            return torch.cat(out) if out else torch.zeros(0, self.method.feature_dim)

        train_all = np.unique(np.concatenate(self._eval_index))
        train_feats = embed(self.dataset.train.images, train_all)
        feats = Features([], [], [], [])
        for e, idx in zip(self.experiences, self._eval_index):
            pos = np.searchsorted(train_all, idx)
            feats.train.append(train_feats[torch.from_numpy(pos)])
            feats.train_labels.append(self.dataset.train.labels[torch.from_numpy(idx)])
            feats.test.append(embed(self.dataset.test.images, e.test_idx))
            feats.test_labels.append(self.dataset.test.labels[torch.from_numpy(e.test_idx)])
        backbone.train(was_training)
        return feats

    def evaluate(self, when: str, features: Features | None, previous: Features | None) -> dict[str, Any]:
        out = {}
        for ev in self.evaluators:
            if ev.when == when:
                measured = ev.evaluate(self, features, previous)
            elif when == "end":
                measured = ev.finish(self, features)  # per-phase evaluators' end-of-run extras
            else:
                continue
            if not isinstance(measured, dict):
                raise TypeError(f"evaluator '{ev.name}' returned {type(measured).__name__}, not a dict")
            out.update({f"{ev.name}/{k}": v for k, v in measured.items()})
        return out


def _pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but this torch sees no CUDA device; use --device cpu")
    return name


def _git_commit() -> str:
    try:
        root = Path(ssl_bench.__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _fingerprint(config: RunConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_json(), sort_keys=True, default=str).encode()).hexdigest()


def check_writable(out: Path) -> None:
    """Fail early, before any training, if results could not be written to ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".ssl-bench-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write results to --out '{out}': {err.strerror or err}; choose a writable folder") from None


def execute(config: RunConfig, registry: Registry, resume: bool = True) -> Path | None:
    """Train and evaluate one run; return the path of its result file (None on ranks other than 0)."""
    check_writable(config.out)
    run = Run(config, registry)
    hook = registry.observers()
    ckpt_path = config.out / f".{config.result_path.name}.ckpt"
    fingerprint = _fingerprint(config)
    start_phase, previous = 0, None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=run.device, weights_only=False)
        if state.get("fingerprint") == fingerprint:
            start_phase = _restore(run, state)
            previous = state["previous"]
            log.info("resuming from checkpoint after phase %d/%d", start_phase, len(run.phases))
        else:
            log.warning("ignoring checkpoint %s: it belongs to a different configuration", ckpt_path)
    t0 = time.time()
    main = distributed.is_main()  # under torchrun, only rank 0 evaluates and writes
    hook.ssl_bench_run_start(run=run)
    log.info("run: protocol %s, method %s, stream %s (%d experiences), strategy %s, seed %d, device %s; %d steps",
             config.protocol.label, config.method, config.stream, len(run.experiences), run.strategy.name, config.seed,
             run.device, run.total_steps)
    if start_phase == 0 and main:
        previous = run.features()
        run.init_metrics = run.evaluate("phase", previous, None)
    disable = not config.progress or not sys.stderr.isatty() or not main
    with tqdm(total=run.total_steps, initial=run.step, desc="training", unit="step", disable=disable, dynamic_ncols=True) as bar:
        for i in range(start_phase, len(run.phases)):
            phase = run.phases[i]
            run.phase_index = i
            bar.set_description(f"phase {i + 1}/{len(run.phases)} ({phase.name})")
            hook.ssl_bench_experience_start(run=run, phase=phase)
            run.strategy.before_phase(run, phase)
            run.train_phase(phase, bar)
            run.strategy.after_phase(run, phase)
            if not main:
                distributed.barrier()  # wait for rank 0's evaluation and checkpoint
                continue
            feats = run.features()
            measured = run.evaluate("phase", feats, previous)
            for k, v in measured.items():
                run.metrics.setdefault(k, []).append(v)
            previous = feats
            hook.ssl_bench_experience_end(run=run, phase=phase, metrics=measured)
            primary = measured.get(f"{config.protocol.eval.primary}/acc")
            if primary is not None:
                log.info("after %s: mean accuracy %.3f over %d experiences", phase.name, float(np.mean(primary)), len(primary))
            _checkpoint(run, ckpt_path, fingerprint, i + 1, previous)
            distributed.barrier()
    if not main:
        return None
    run.end_metrics = run.evaluate("end", previous, None)
    path = _write_result(run, time.time() - t0)
    ckpt_path.unlink(missing_ok=True)
    hook.ssl_bench_run_end(run=run, path=path)
    log.info("wrote %s", path)
    return path


def _checkpoint(run: Run, path: Path, fingerprint: str, next_phase: int, previous: Features) -> None:
    state = {"fingerprint": fingerprint, "next_phase": next_phase, "step": run.step, "losses": run.losses,
             "metrics": run.metrics, "init_metrics": run.init_metrics, "method": run.method.state_dict(),
             "optimizer": run.optimizer.state_dict(), "strategy": run.strategy.state_dict(), "previous": previous,
             "generator": run.generator.get_state(), "torch_rng": torch.get_rng_state()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _restore(run: Run, state: dict) -> int:
    run.method.load_state_dict(state["method"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.strategy.load_state_dict(state["strategy"])
    run.step, run.losses = state["step"], state["losses"]
    run.metrics, run.init_metrics = state["metrics"], state["init_metrics"]
    run.generator.set_state(state["generator"].to(run.generator.device) if run.device.type != "cpu" else state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return state["next_phase"]


def _write_result(run: Run, seconds: float) -> Path:
    cfg, protocol = run.config, run.protocol
    arrays: dict[str, Any] = {"config": json.dumps(cfg.to_json(), sort_keys=True, default=str),
                              "protocol_json": json.dumps(protocol.model_dump(mode="json"), sort_keys=True)}
    primary = f"{protocol.eval.primary}/acc"
    if primary not in run.init_metrics:
        raise UserError(f"the primary evaluator '{protocol.eval.primary}' returned no 'acc'")
    acc = np.stack([np.asarray(a, dtype=float) for a in run.metrics[primary]])
    arrays["metrics/acc_matrix"] = acc
    arrays["metrics/acc_init"] = np.asarray(run.init_metrics[primary], dtype=float)
    for key, values in run.metrics.items():
        arrays[f"metrics/{key}"] = np.stack([np.asarray(v) for v in values])
    for key, value in run.init_metrics.items():
        arrays[f"init/{key}"] = np.asarray(value)
    for key, value in run.end_metrics.items():
        arrays[f"end/{key}"] = np.asarray(value)
    ds = run.dataset
    arrays["stream/class_names"] = np.array(ds.classes, dtype=object).astype("S")
    arrays["stream/domain_names"] = np.array(ds.domains, dtype=object).astype("S")
    for e in run.experiences:
        base = f"stream/experience_{e.index}"
        arrays[f"{base}/train_idx"] = np.asarray(e.train_idx, dtype=np.int64)
        arrays[f"{base}/test_idx"] = np.asarray(e.test_idx, dtype=np.int64)
        arrays[f"{base}/classes"] = np.asarray(e.classes, dtype=np.int64)
        arrays[f"{base}/domains"] = np.asarray(e.domains, dtype=np.int64)
        arrays[f"{base}/name"] = e.name
        for key, value in e.info.items():
            arrays[f"{base}/info/{key}"] = value if isinstance(value, str) else np.asarray(value)
    arrays["stream/class_order"] = np.concatenate([np.asarray(e.classes, dtype=np.int64) for e in run.experiences])
    arrays["stream/domain_order"] = np.concatenate([np.asarray(e.domains, dtype=np.int64) for e in run.experiences])
    arrays["phases/names"] = np.array([p.name for p in run.phases], dtype="S")
    arrays["phases/steps"] = np.array([p.steps for p in run.phases], dtype=np.int64)
    arrays["phases/experiences"] = json.dumps([p.experiences for p in run.phases])
    arrays["train/loss"] = np.asarray(run.losses, dtype=np.float32)
    for key, value in run.strategy.record().items():
        arrays[f"strategy/{key}"] = value if isinstance(value, str) else np.asarray(value)
    summary = continual.summarize(arrays)
    attrs = {
        "protocol": protocol.name, "protocol_version": protocol.version, "protocol_hash": protocol.hash,
        "method": cfg.method, "stream": cfg.stream, "strategy": cfg.strategy, "seed": cfg.seed,
        "ssl_bench_version": ssl_bench.__version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "device": _device_name(run.device),
        "git_commit": _git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 2),
        "steps": run.step, "dataset": protocol.dataset.name, "world_size": run.world_size,
        "plugins": {p.name: p.version for p in run.registry.plugins.values() if not p.error},
    }
    definitions = {k: v for k, v in continual.DEFINITIONS.items() if k in summary}
    return results.write(cfg.result_path, attrs, arrays, {"summary": summary, "summary_definitions": definitions})


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()} x{os.cpu_count()}"
