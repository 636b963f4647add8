"""The training loop: :func:`execute` runs a whole run phase by phase; :func:`train_phase` runs one phase's steps.

Per phase: ``strategy.before_phase`` → the steps → ``strategy.after_phase`` → features and
evaluators (:mod:`.evaluation`) → checkpoint (:mod:`.checkpoint`); at the end the end-of-run
evaluators and the result file (:mod:`.record`). Per step: indices → Batch →
``strategy.batch`` → views at the S3L stage's resolution → ``strategy.views`` → method loss
(+ ``strategy.loss``) → backward → ``strategy.after_backward`` → ``method.after_backward`` →
optimiser step → ``method.after_step``; ``method.begin_phase`` before a phase's first step.
Under torchrun every rank trains; only rank 0 evaluates and writes.

The learning rate follows the recipe's warm-up and schedule, and ``method.after_step`` receives the
progress through the same schedule (EMA momentum ramps): under the protocol's ``schedule_scope =
"phase"`` each phase is a schedule of its own, restarting warm-up, decay and momentum, as CaSSLe's
code trains every experience; under ``"run"`` one schedule spans all the run's steps (:func:`schedule_of`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ssl_bench.api import Batch, Phase
from ssl_bench.engine import checkpoint, distributed, evaluation, record, tracking, weights
from ssl_bench.engine.build import Run, moved
from ssl_bench.engine.optim import lr_at, set_lr
from ssl_bench.errors import UserError
from ssl_bench.plan import Plan, RunConfig, make_plan
from ssl_bench.registry import Registry

log = logging.getLogger(__name__)


def execute(config: RunConfig, registry: Registry, resume: bool = True, wait: bool = False) -> Path | None:
    """Train and evaluate one run; return the path of its result file (None on ranks other than 0).

    The plugins are resolved once, into the run's plan (:func:`ssl_bench.plan.make_plan`: every option checked
    before any data is loaded). Rank 0 holds the configuration's lock (:func:`checkpoint.lock`) for the whole
    run: a second process of the same configuration on the same ``--out`` fails with one line, or waits for it
    with ``wait``.
    """
    plan = make_plan(config, registry)
    record.check_writable(config.out)
    tracking.check(config.log)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun's other ranks: rank 0 holds the lock
        return _tracked(plan, resume)
    with checkpoint.lock(config, wait):
        return _tracked(plan, resume)


def _tracked(plan: Plan, resume: bool) -> Path | None:
    """The run, with the trackers that ``--log`` asked for registered as its observers."""
    config, registry = plan.config, plan.registry
    run = Run(plan)
    trackers = tracking.trackers(config) if distributed.is_main() else []
    for tracker in trackers:  # observers of this run only
        registry.pm.register(tracker)
    try:
        return _execute(run, resume)
    finally:
        for tracker in trackers:
            registry.pm.unregister(tracker)
            tracker.close()


def _execute(run: Run, resume: bool) -> Path | None:
    config, registry = run.config, run.registry
    hook = registry.observers()
    ckpt_path = checkpoint.path_for(config)
    fingerprint = checkpoint.fingerprint(config)
    start_phase, previous = checkpoint.resume(run, ckpt_path, fingerprint) if resume else (0, None)
    cost, points = run.cost, len(run.phases) + 1  # evaluation points: init and after every phase
    main = distributed.is_main()  # under torchrun, only rank 0 evaluates and writes
    hook.ssl_bench_run_start(run=run)
    log.info(
        "run: protocol %s, method %s, stream %s (%d experiences), strategy %s, seed %d, device %s; %d steps",
        config.protocol.label,
        config.method,
        config.stream,
        len(run.experiences),
        run.strategy.name,
        config.seed,
        run.device,
        run.total_steps,
    )
    if start_phase == 0 and main:
        with cost.evaluation("features", 0, points):
            previous = evaluation.features(run)
        run.init_metrics = evaluation.evaluate(run, "phase", previous, None, lambda n: cost.evaluation(n, 0, points))
    disable = not config.progress or not sys.stderr.isatty() or not main
    with tqdm(total=run.total_steps, initial=run.step, desc="training", unit="step", disable=disable, dynamic_ncols=True) as bar:
        for i in range(start_phase, len(run.phases)):
            phase = run.phases[i]
            run.phase_index = i
            bar.set_description(f"phase {i + 1}/{len(run.phases)} ({phase.name})")
            hook.ssl_bench_phase_start(run=run, phase=phase)
            hook.ssl_bench_experience_start(run=run, phase=phase)  # deprecated name, until 0.3
            run.strategy.before_phase(run, phase)
            with cost.phase(run, i):
                train_phase(run, phase, bar)
            run.strategy.after_phase(run, phase)
            if not main:
                distributed.barrier()  # wait for rank 0's evaluation and checkpoint
                continue
            with cost.evaluation("features", i + 1, points):
                feats = evaluation.features(run)
            measured = evaluation.evaluate(run, "phase", feats, previous, lambda n, i=i: cost.evaluation(n, i + 1, points))
            for k, v in measured.items():
                run.metrics.setdefault(k, []).append(v)
            previous = feats
            hook.ssl_bench_phase_end(run=run, phase=phase, metrics=measured)
            hook.ssl_bench_experience_end(run=run, phase=phase, metrics=measured)  # deprecated name, until 0.3
            primary = measured.get(f"{config.protocol.eval.primary}/acc")
            if primary is not None:
                log.info("after %s: mean accuracy %.3f over %d experiences", phase.name, float(np.mean(primary)), len(primary))
            checkpoint.save(run, ckpt_path, fingerprint, i + 1, previous)
            distributed.barrier()
    if not main:
        return None
    run.end_metrics = evaluation.evaluate(run, "end", previous, None, lambda n: cost.evaluation(n, -1, points))
    try:
        path = record.write(run, cost.elapsed())
    except OSError as err:
        kept = "the run's checkpoint is kept, rerun to write the result"
        raise UserError(checkpoint.write_error(err, config.result_path, kept)) from None
    if config.save_backbone:
        log.info("wrote %s", weights.save(run, path))
    ckpt_path.unlink(missing_ok=True)
    hook.ssl_bench_run_end(run=run, path=path)
    log.info("wrote %s", path)
    return path


def phase_pool(run: Run, phase: Phase) -> torch.Tensor:
    """The dataset.train indices a phase draws its batches from (its experiences' training samples)."""
    return torch.from_numpy(np.concatenate([run.experiences[i].train_idx for i in phase.experiences]))


def resolution_at(run: Run, step_in_phase: int, steps: int) -> int:
    """The S3L schedule: the resolution of the stage that this step of the phase falls in."""
    stages = run.protocol.train.stages
    if not stages:
        return run.dataset.resolution
    t, acc = step_in_phase / steps, 0.0
    for stage in stages:
        acc += stage.fraction
        if t < acc - 1e-9:
            return stage.resolution
    return stages[-1].resolution


def schedule_of(run: Run, phase: Phase) -> tuple[int, int, int]:
    """``(start, total, warmup)``: where this phase's first step lies on its lr/momentum schedule, how many
    steps that schedule has, and its warm-up steps (``recipe.warmup_epochs`` epochs of the phase's data,
    of the first phase's under the "run" scope; an epoch is the phase's full batches). A protocol that sets
    ``train.warmup_scale`` gets ``warmup_epochs x warmup_scale`` epochs, an epoch then counted exactly (the
    phase's images / batch size, not its full batches), so that protocols of different data sizes warm up
    for the same share of their steps."""
    tr = run.protocol.train
    if tr.schedule_scope == "phase":
        start, total, sized_by = 0, phase.steps, phase
    else:
        start, total, sized_by = sum(p.steps for p in run.phases[: run.phase_index]), run.total_steps, run.phases[0]
    if tr.warmup_scale is not None:
        epochs = run.recipe.warmup_epochs * tr.warmup_scale
        return start, total, min(total, round(epochs * len(phase_pool(run, sized_by)) / tr.batch_size))
    steps_per_epoch = max(1, len(phase_pool(run, sized_by)) // tr.batch_size)
    return start, total, min(total, round(run.recipe.warmup_epochs * steps_per_epoch))


#: on a GPU, steps between host copies of the losses (observer hooks, progress bar, finiteness check): the
#: step itself never waits for the GPU. On the CPU there is nothing to wait for, so every step is copied.
LOG_EVERY = 50
#: steps between checks that the parameters are finite (and at every phase end)
PARAM_CHECK_EVERY = 50


def _indices(run: Run, phase: Phase, pool: torch.Tensor, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The dataset.train indices of each step's batch (this rank's share), on ``device`` and on the host: batches
    drawn without replacement from a pool reshuffled every epoch (the last partial batch dropped); the shuffles are
    drawn on the CPU, so every device trains on the same batches, and copied from pinned memory, so no step waits
    for the copy."""
    tr = run.protocol.train
    order = torch.Generator().manual_seed(run.seed * 1_000_003 + run.phase_index)
    on_device = pool if device.type == "cpu" else pool.pin_memory().to(device, non_blocking=True)  # once per phase

    def shuffle() -> tuple[torch.Tensor, torch.Tensor]:
        perm = torch.randperm(len(pool), generator=order)
        return perm, (perm if device.type == "cpu" else perm.pin_memory()).to(device, non_blocking=True)

    (host, perm), pos = shuffle(), 0
    for _ in range(phase.steps):
        if pos + tr.batch_size > len(pool):  # a new epoch: reshuffle
            (host, perm), pos = shuffle(), 0
        take = slice(pos, pos + min(tr.batch_size, len(pool)))
        yield on_device[perm[take]][run.rank :: run.world_size], pool[host[take]][run.rank :: run.world_size]
        pos += tr.batch_size


def _batches(run: Run, phase: Phase, pool: torch.Tensor) -> Iterator[Batch]:
    """Each step's Batch on the device: gathered there when the data live there (``run.device_data``), else
    gathered on the host; on a GPU the next batch's gather and pinned copy (on a side stream) overlap the step."""
    if not run.prefetch:
        device = run.device if run.device_data is not None else torch.device("cpu")
        for index, host in _indices(run, phase, pool, device):
            yield run.batch_of(index, host)
        return
    stream, current = torch.cuda.Stream(run.device), torch.cuda.current_stream(run.device)
    ahead = None
    for index, _ in _indices(run, phase, pool, torch.device("cpu")):
        host = run.host_batch(index, pin=True)
        with torch.cuda.stream(stream):
            nxt = moved(host, run.device)
        if ahead is not None:
            yield ahead
        current.wait_stream(stream)
        for t in (nxt.images, nxt.labels, nxt.domains, nxt.index):
            t.record_stream(current)
        ahead = nxt
    if ahead is not None:
        yield ahead


def train_phase(run: Run, phase: Phase, bar: Any) -> None:
    """Train ``phase.steps`` optimiser steps on the phase's experiences (``bar``: a tqdm progress bar).

    Nothing in a step waits for the GPU: the losses stay on the device and are copied every
    :data:`LOG_EVERY` steps and at the phase's end (:func:`_flush`), where a non-finite loss stops the run."""
    tr = run.protocol.train
    pool = phase_pool(run, phase)
    start, total, warmup = schedule_of(run, phase)
    every = 1 if run.device.type == "cpu" else LOG_EVERY
    run.method.train()
    run.method.begin_phase(phase.steps, max(1, len(pool) // tr.batch_size))
    pending: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []  # (step, total loss, method's loss if a strategy adds one)
    for k, batch in enumerate(_batches(run, phase, pool)):
        batch = run.strategy.batch(run, batch)
        resolution = resolution_at(run, k, phase.steps)
        views = run.strategy.views(run, run.views(batch.images, resolution), batch)
        if run.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for v in views]
        set_lr(run.optimizer, lr_at(start + k, total, warmup, run.peak_lr, run.recipe.schedule), run.peak_lr)
        with run.cost.count_step(run, resolution):  # FLOPs of the phase's first step at each resolution
            with run.autocast():
                loss = run.step_model(views, batch.labels if run.method.uses_labels else None).float()
                extra = run.strategy.loss(run, views, batch)
            loss_sum = loss if extra is None else loss + extra.float()
            run.optimizer.zero_grad(set_to_none=True)
            loss_sum.backward()
        run.strategy.after_backward(run)
        run.method.after_backward()
        run.optimizer.step()
        run.step += 1
        run.images_processed += len(batch.index) * run.world_size
        run.method.after_step((start + k + 1) / total)
        pending.append((run.step, loss_sum.detach(), None if extra is None else loss.detach()))
        bar.update(1)
        last = k == phase.steps - 1
        if len(pending) >= every or last:
            _flush(run, phase, pending, last or (k + 1) % PARAM_CHECK_EVERY == 0)
            bar.set_postfix(loss=f"{run.losses[-1]:.3f}", refresh=False)
            pending = []


def _flush(run: Run, phase: Phase, pending: list[tuple[int, torch.Tensor, torch.Tensor | None]], params: bool) -> None:
    """Copy the pending steps' losses to the host (one copy), stop on a non-finite one (or non-finite parameters
    when ``params``), else record them and call the observers' ``ssl_bench_step_end`` for each step, in order."""
    n = len(pending)
    parts = [torch.stack([t for _, t, _ in pending]), torch.stack([t if m is None else m for _, t, m in pending])]
    if params:
        parts.append(torch.stack([torch.isfinite(p).all() for p in run.method.parameters()]).all().float().reshape(1))
    host = torch.cat(parts).cpu().tolist()
    for (step, _, term), value, own in zip(pending, host[:n], host[n : 2 * n]):
        if not math.isfinite(value):
            what = (
                "loss" if term is None else ("loss" if not math.isfinite(own) else f"loss term of strategy '{run.strategy.name}'")
            )
            raise FloatingPointError(_nan_message(run, phase, f"the {what} became {value} at step {step}"))
    if params and host[-1] != 1.0:
        raise FloatingPointError(
            _nan_message(run, phase, f"the parameters became non-finite by step {pending[-1][0]} while the loss stayed finite")
        )
    hook = run.registry.observers()
    for (step, _, _), value in zip(pending, host[:n]):
        run.losses.append(value)
        hook.ssl_bench_step_end(run=run, step=step, loss=value)


def _nan_message(run: Run, phase: Phase, what: str) -> str:
    """One line: the method, what became non-finite and where, the first non-finite parameter, what to change."""
    bad = next((name for name, p in run.method.named_parameters() if not torch.isfinite(p).all()), None)
    params = f"; first non-finite parameter: {bad}" if bad else ""
    lr = run.recipe.lr
    return (
        f"method '{run.config.method}': {what} (phase '{phase.name}'){params}; "
        f"lower the learning rate, e.g. --recipe lr={lr / 2:g} (now {lr:g})"
    )
