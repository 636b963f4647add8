"""Feature extraction and evaluation: the frozen backbone's features, measured by the protocol's evaluators.

After initialisation and after every training phase the engine embeds, for every experience,
its probe-training samples (a fixed subset per seed, :func:`probe_indices`) and its held-out
samples (:func:`features`); the evaluators then measure them (:func:`evaluate`). Their results
are keyed ``"<evaluator>/<key>"``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ssl_bench.api import Experience, Features
from ssl_bench.blocks import probes
from ssl_bench.protocol import Protocol

if TYPE_CHECKING:
    from ssl_bench.engine.build import Run


def probe_indices(protocol: Protocol, experiences: list[Experience], seed: int) -> list[np.ndarray]:
    """Per experience, the labelled training samples that probes are fitted on (fixed per seed)."""
    cap = protocol.eval.probe_train_per_experience
    rng = np.random.default_rng(seed + 7919)
    return [
        np.sort(rng.choice(e.train_idx, cap, replace=False)) if 0 < cap < len(e.train_idx) else e.train_idx for e in experiences
    ]


def features(run: Run) -> Features:
    """Frozen-backbone features of every experience's probe-training and held-out samples (float32).

    Under ``torch.inference_mode``, ``eval.batch_size`` images at a time, the training images first (each once,
    however many experiences share it). The protocol's ``eval.precision`` says how: ``"fp32"`` (the default, as
    every protocol before the key existed) in float32, with channels_last inputs when ``eval.channels_last``
    says so (1.5-1.7x faster on the CPU; the features agree to about 3e-7 of their scale); ``"bf16"`` under bf16
    autocast with channels_last inputs, 2.5-4x faster on a CPU with AVX512-BF16/AMX, at bf16's rounding of the
    features (about 3 significant digits, enough to flip an L2 choice by held-out accuracy where two values nearly
    tie, hence v3's choice by loss: benchmark/RESULTS.md, "Evaluation cost, v3"). The pass itself is
    :func:`ssl_bench.blocks.probes.embed`.
    The features returned are ordinary tensors (copied out of inference mode), so evaluators may use them
    in autograd.
    """
    backbone = run.method.backbone
    was_training = backbone.training
    backbone.eval()
    train_all = np.unique(np.concatenate(run.probe_index))
    train_feats = probes.embed(run, run.dataset.train.images, train_all)
    feats = Features([], [], [], [])
    for e, idx in zip(run.experiences, run.probe_index):
        pos = np.searchsorted(train_all, idx)
        feats.train.append(train_feats[torch.from_numpy(pos)])
        feats.train_labels.append(run.dataset.train.labels[torch.from_numpy(idx)])
        feats.test.append(probes.embed(run, run.dataset.test.images, e.test_idx))
        feats.test_labels.append(run.dataset.test.labels[torch.from_numpy(e.test_idx)])
    backbone.train(was_training)
    return feats


def evaluate(
    run: Run,
    when: str,
    features: Features | None,
    previous: Features | None,
    timer: Callable[[str], contextlib.AbstractContextManager] | None = None,
) -> dict[str, Any]:
    """Run the evaluators of ``when`` ("phase" or "end"; at the end also the per-phase ones' ``finish``);
    ``timer(name)``, when given, is entered around each evaluator (:meth:`ssl_bench.engine.cost.Cost.evaluation`)."""
    out = {}
    for ev in run.evaluators:
        if ev.when != when and when != "end":
            continue
        with timer(ev.name) if timer is not None else contextlib.nullcontext():
            if ev.when == when:
                measured = ev.evaluate(run, features, previous)
            else:
                measured = ev.finish(run, features)  # per-phase evaluators' end-of-run extras
        if not isinstance(measured, dict):
            raise TypeError(f"evaluator '{ev.name}' returned {type(measured).__name__}, not a dict")
        out.update({f"{ev.name}/{k}": v for k, v in measured.items()})
    return out
