"""Feature extraction and evaluation: the frozen backbone's features, measured by the protocol's evaluators.

After initialisation and after every training phase the engine embeds, for every experience,
its probe-training samples (a fixed subset per seed, :func:`probe_indices`) and its held-out
samples (:func:`features`); the evaluators then measure them (:func:`evaluate`). Their results
are keyed ``"<evaluator>/<key>"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ssl_bench.api import Experience, Features
from ssl_bench.blocks import augment
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


@torch.no_grad()
def features(run: Run) -> Features:
    """Frozen-backbone features of every experience's probe-training and held-out samples."""
    backbone = run.method.backbone
    was_training = backbone.training
    backbone.eval()
    bs = run.protocol.eval.batch_size

    def embed(images: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        out = []
        for s in range(0, len(index), bs):
            x = images[torch.from_numpy(index[s : s + bs])].to(run.device)
            out.append(backbone(augment.prepare(x, run.dataset.resolution)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, run.method.feature_dim)

    train_all = np.unique(np.concatenate(run.probe_index))
    train_feats = embed(run.dataset.train.images, train_all)
    feats = Features([], [], [], [])
    for e, idx in zip(run.experiences, run.probe_index):
        pos = np.searchsorted(train_all, idx)
        feats.train.append(train_feats[torch.from_numpy(pos)])
        feats.train_labels.append(run.dataset.train.labels[torch.from_numpy(idx)])
        feats.test.append(embed(run.dataset.test.images, e.test_idx))
        feats.test_labels.append(run.dataset.test.labels[torch.from_numpy(e.test_idx)])
    backbone.train(was_training)
    return feats


def evaluate(run: Run, when: str, features: Features | None, previous: Features | None) -> dict[str, Any]:
    """Run the evaluators of ``when`` ("phase" or "end"; at the end also the per-phase ones' ``finish``)."""
    out = {}
    for ev in run.evaluators:
        if ev.when == when:
            measured = ev.evaluate(run, features, previous)
        elif when == "end":
            measured = ev.finish(run, features)  # per-phase evaluators' end-of-run extras
        else:
            continue
        if not isinstance(measured, dict):
            raise TypeError(f"evaluator '{ev.name}' returned {type(measured).__name__}, not a dict")
        out.update({f"{ev.name}/{k}": v for k, v in measured.items()})
    return out
