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
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ssl_bench import distributed, tracking, weights
from ssl_bench.api import Phase
from ssl_bench.engine import checkpoint, evaluation, record
from ssl_bench.engine.build import Run
from ssl_bench.engine.config import RunConfig
from ssl_bench.optim import lr_at, set_lr
from ssl_bench.registry import Registry

log = logging.getLogger(__name__)


def execute(config: RunConfig, registry: Registry, resume: bool = True) -> Path | None:
    """Train and evaluate one run; return the path of its result file (None on ranks other than 0)."""
    record.check_writable(config.out)
    tracking.check(config.log)
    run = Run(config, registry)
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
    t0 = time.time()
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
        previous = evaluation.features(run)
        run.init_metrics = evaluation.evaluate(run, "phase", previous, None)
    disable = not config.progress or not sys.stderr.isatty() or not main
    with tqdm(total=run.total_steps, initial=run.step, desc="training", unit="step", disable=disable, dynamic_ncols=True) as bar:
        for i in range(start_phase, len(run.phases)):
            phase = run.phases[i]
            run.phase_index = i
            bar.set_description(f"phase {i + 1}/{len(run.phases)} ({phase.name})")
            hook.ssl_bench_experience_start(run=run, phase=phase)
            run.strategy.before_phase(run, phase)
            train_phase(run, phase, bar)
            run.strategy.after_phase(run, phase)
            if not main:
                distributed.barrier()  # wait for rank 0's evaluation and checkpoint
                continue
            feats = evaluation.features(run)
            measured = evaluation.evaluate(run, "phase", feats, previous)
            for k, v in measured.items():
                run.metrics.setdefault(k, []).append(v)
            previous = feats
            hook.ssl_bench_experience_end(run=run, phase=phase, metrics=measured)
            primary = measured.get(f"{config.protocol.eval.primary}/acc")
            if primary is not None:
                log.info("after %s: mean accuracy %.3f over %d experiences", phase.name, float(np.mean(primary)), len(primary))
            checkpoint.save(run, ckpt_path, fingerprint, i + 1, previous)
            distributed.barrier()
    if not main:
        return None
    run.end_metrics = evaluation.evaluate(run, "end", previous, None)
    path = record.write(run, time.time() - t0)
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
    of the first phase's under the "run" scope; an epoch is the phase's full batches)."""
    tr = run.protocol.train
    if tr.schedule_scope == "phase":
        start, total, sized_by = 0, phase.steps, phase
    else:
        start, total, sized_by = sum(p.steps for p in run.phases[: run.phase_index]), run.total_steps, run.phases[0]
    steps_per_epoch = max(1, len(phase_pool(run, sized_by)) // tr.batch_size)
    return start, total, min(total, round(run.recipe.warmup_epochs * steps_per_epoch))


def train_phase(run: Run, phase: Phase, bar: Any) -> None:
    """Train ``phase.steps`` optimiser steps on the phase's experiences (``bar``: a tqdm progress bar)."""
    tr = run.protocol.train
    pool = phase_pool(run, phase)
    start, total, warmup = schedule_of(run, phase)
    order = torch.Generator().manual_seed(run.seed * 1_000_003 + run.phase_index)
    perm, pos = torch.randperm(len(pool), generator=order), 0
    hook = run.registry.observers()
    run.method.train()
    run.method.begin_phase(phase.steps, max(1, len(pool) // tr.batch_size))
    for k in range(phase.steps):
        if pos + tr.batch_size > len(perm):  # a new epoch: reshuffle (the last partial batch is dropped)
            perm, pos = torch.randperm(len(pool), generator=order), 0
        index = pool[perm[pos : pos + min(tr.batch_size, len(pool))]][run.rank :: run.world_size]
        pos += tr.batch_size
        batch = run.strategy.batch(run, run.batch_of(index))
        views = run.strategy.views(run, run.views(batch.images, resolution_at(run, k, phase.steps)), batch)
        set_lr(run.optimizer, lr_at(start + k, total, warmup, run.peak_lr, run.recipe.schedule), run.peak_lr)
        loss = run.model(views, batch.labels if run.method.uses_labels else None)
        extra = run.strategy.loss(run, views, batch)
        loss_sum = loss if extra is None else loss + extra
        if not torch.isfinite(loss_sum):
            raise FloatingPointError(
                f"loss became {loss_sum.item()} at step {run.step} (phase '{phase.name}'); lower the learning rate"
            )
        run.optimizer.zero_grad(set_to_none=True)
        loss_sum.backward()
        run.strategy.after_backward(run)
        run.method.after_backward()
        run.optimizer.step()
        run.step += 1
        run.images_processed += len(batch.index) * run.world_size
        run.method.after_step((start + k + 1) / total)
        value = float(loss_sum.detach())
        run.losses.append(value)
        hook.ssl_bench_step_end(run=run, step=run.step, loss=value)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}", refresh=False)
