"""Continual-learning numbers derived from stored result arrays (the same code writes and checks them).

Notation: ``R[i, j]`` is ``metrics/acc_matrix``, the accuracy on experience j's held-out
split after training phase i (``P`` phases, ``T`` experiences); ``b[j]`` is
``metrics/acc_init``, the same for the random-init backbone. Experience j is *trained in*
the phases whose ``phases/experiences`` list contains it; ``first(j)`` and ``last(j)`` are
the first and last such phase. For sequential strategies phase i trains experience i, so
``first(j) = last(j) = j``.

:func:`summarize` returns only the numbers that are defined for the run: a joint run (one
phase over every experience) has no backward transfer or forgetting, so those keys are
absent rather than NaN. :data:`DEFINITIONS` says what each key is; the engine stores it
next to the numbers (``summary_definitions`` attributes). For sequential strategies
``forgetting_init_final == -bwt`` exactly: both compare R[j, j] with R[P-1, j].

This module is public: tools (``ssl-bench submit``, ``plot``, the leaderboard) call it to
recompute and compare numbers from the files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ssl_bench.errors import UserError

DEFINITIONS: dict[str, str] = {
    "final_avg_acc": "mean_j R[P-1, j]: accuracy over all experiences after the last phase",
    "init_avg_acc": "mean_j b[j]: the same for the random-init backbone",
    "avg_acc": "mean_i mean_{j seen by phase i} R[i, j]: average incremental accuracy (Rebuffi et al. 2017)",
    "bwt": "mean over j with last(j) < P-1 of R[P-1, j] - R[last(j), j]: backward transfer (Lopez-Paz & Ranzato 2017)",
    "fwt": "mean over j with first(j) > 0 of R[first(j)-1, j] - b[j]: forward transfer vs the random-init "
    "backbone (Lopez-Paz & Ranzato 2017)",
    "forgetting_max": "mean over j with last(j) < P-1 of max_{first(j) <= l < P-1} R[l, j] - R[P-1, j]: forgetting "
    "(Chaudhry et al. 2018; the max runs over the phases from the one that first trained j, as in mammoth and "
    "Avalanche, so forward transfer before j was trained is not counted as forgetting)",
    "forgetting_init_final": "mean over j with last(j) < P-1 of R[last(j), j] - R[P-1, j]: Avalanche's experience "
    "forgetting (accuracy when last trained minus final)",
    "collapse_auc": "metrics/collapse/auc of the last phase: AUC of the normalised cumulative singular-value "
    "spectrum (Li, Efros, Pathak); higher = more collapsed",
}


def phase_experiences(arrays: Mapping[str, Any], n_phases: int, n_experiences: int) -> list[list[int]]:
    """Which experiences each phase trained (from ``phases/experiences``; sequential if absent)."""
    raw = arrays.get("phases/experiences")
    if raw is None:
        if n_phases != n_experiences:
            raise UserError(f"{n_phases} phases for {n_experiences} experiences and no phases/experiences to map them")
        return [[i] for i in range(n_phases)]
    if isinstance(raw, bytes):
        raw = raw.decode()
    plan = json.loads(raw) if isinstance(raw, str) else [list(map(int, p)) for p in raw]
    if len(plan) != n_phases:
        raise UserError(f"phases/experiences lists {len(plan)} phases but the accuracy matrix has {n_phases} rows")
    return plan


def summarize(arrays: Mapping[str, Any]) -> dict[str, float]:
    """Headline numbers of one run from its result-file arrays (see :data:`DEFINITIONS`)."""
    R = np.asarray(arrays["metrics/acc_matrix"], dtype=float)
    if R.ndim != 2 or R.size == 0:
        raise UserError(f"metrics/acc_matrix must be a non-empty [phases, experiences] matrix, got shape {R.shape}")
    P, T = R.shape
    plan = phase_experiences(arrays, P, T)
    first = {j: min(i for i, p in enumerate(plan) if j in p) for j in range(T) if any(j in p for p in plan)}
    last = {j: max(i for i, p in enumerate(plan) if j in p) for j in first}

    out = {"final_avg_acc": float(R[-1].mean())}
    seen: set[int] = set()
    per_phase = []
    for i, p in enumerate(plan):
        seen.update(p)
        per_phase.append(R[i, sorted(seen)].mean())
    out["avg_acc"] = float(np.mean(per_phase))

    old = [j for j in last if last[j] < P - 1]  # experiences trained before the last phase
    if old:
        out["bwt"] = float(np.mean([R[-1, j] - R[last[j], j] for j in old]))
        out["forgetting_max"] = float(np.mean([R[first[j] : -1, j].max() - R[-1, j] for j in old]))
        out["forgetting_init_final"] = float(np.mean([R[last[j], j] - R[-1, j] for j in old]))
    if "metrics/acc_init" in arrays:
        b = np.asarray(arrays["metrics/acc_init"], dtype=float)
        out["init_avg_acc"] = float(b.mean())
        later = [j for j in first if first[j] > 0]
        if later:
            out["fwt"] = float(np.mean([R[first[j] - 1, j] - b[j] for j in later]))
    if "metrics/collapse/auc" in arrays:
        out["collapse_auc"] = float(np.asarray(arrays["metrics/collapse/auc"], dtype=float).reshape(-1)[-1])
    return out


#: what :func:`cost_summary` returns, and what each key is (None where a file has no ``cost/`` datasets)
COST_DEFINITIONS: dict[str, str] = {
    "total_minutes": "the run's wall-clock minutes over all its processes (attribute `seconds`; written after the run's data "
    "were loaded and its plugins built)",
    "train_minutes": "minutes of the training steps, all phases (cost/train_seconds)",
    "train_cpu_minutes": "CPU minutes of the process during the training steps (all its threads)",
    "eval_minutes": "minutes of evaluation: the features and every evaluator, at init, after every phase and at the end",
    "eval_minutes_by": "eval_minutes per part: 'features' and each evaluator (its per-phase and end-of-run seconds)",
    "images_per_second": "training images through the method per second of training, over the whole run",
    "train_flops": "measured FLOPs of all training steps (forward and backward; cost/train_flops summed)",
    "step_flops": "measured FLOPs of one training step at each resolution ({resolution: FLOPs}, in the first phase "
    "that trained at it)",
    "peak_memory_bytes": "peak memory over the phases (CPU: the process's peak RSS; CUDA: max allocated)",
    "device": "the device the run trained on (attribute `device`)",
}


def cost_summary(result_or_arrays: Any, attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What one run cost (see :data:`COST_DEFINITIONS`), from a :class:`ssl_bench.results.Result` or from its
    arrays (a mapping of dataset paths, ``attrs`` its root attributes). Files written before runs recorded
    ``cost/`` (every result submitted before it) give ``total_minutes`` (from ``seconds``) and ``device``, and
    None for the rest. The one function that every reader of costs uses (``show``, ``export``, the leaderboard,
    the report)."""
    arrays = getattr(result_or_arrays, "arrays", result_or_arrays)
    attrs = dict(getattr(result_or_arrays, "attrs", {}) if attrs is None else attrs)
    seconds = attrs.get("seconds")
    out: dict[str, Any] = dict.fromkeys(COST_DEFINITIONS)
    out["total_minutes"] = float(seconds) / 60 if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None
    out["device"] = str(attrs["device"]) if "device" in attrs else None
    if "cost/train_seconds" not in arrays:
        return out

    def total(key: str) -> float:
        values = np.asarray(arrays[key], dtype=float)
        return float(np.nansum(values)) if values.size else 0.0

    train = total("cost/train_seconds")
    out["train_minutes"] = train / 60
    out["train_cpu_minutes"] = total("cost/train_cpu_seconds") / 60 if "cost/train_cpu_seconds" in arrays else None
    by: dict[str, float] = {}
    for key in arrays:
        for prefix in ("cost/eval_seconds/", "cost/end_seconds/"):
            if key.startswith(prefix):
                name = key[len(prefix) :]
                by[name] = by.get(name, 0.0) + total(key) / 60
    out["eval_minutes"] = sum(by.values())
    out["eval_minutes_by"] = dict(sorted(by.items()))
    images = total("cost/train_images") if "cost/train_images" in arrays else None
    out["images_per_second"] = images / train if images is not None and train > 0 else None
    if "cost/train_flops" in arrays:
        out["train_flops"] = total("cost/train_flops")
    if "cost/step_flops" in arrays and "cost/resolutions" in arrays:
        flops, resolutions = np.asarray(arrays["cost/step_flops"], dtype=float), np.asarray(arrays["cost/resolutions"])
        firsts = {}
        for r, res in enumerate(resolutions.reshape(-1)):
            measured = flops[:, r][np.isfinite(flops[:, r])] if flops.ndim == 2 and r < flops.shape[1] else []
            firsts[int(res)] = float(measured[0]) if len(measured) else None
        out["step_flops"] = firsts
    if "cost/peak_memory_bytes" in arrays:
        peak = np.asarray(arrays["cost/peak_memory_bytes"])
        out["peak_memory_bytes"] = int(peak.max()) if peak.size else None
    return out


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA (Kornblith et al. 2019) between two feature matrices of the same samples, [n, d1] and [n, d2].

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with columns centred; 1 for identical
    features, invariant to orthogonal transforms and isotropic scaling of either side. ``x`` and
    ``y`` are arrays or tensors of any float dtype; the computation is in float64 with torch, the
    same for the ``cka`` evaluator (which stores it) and for the tools that recompute it from files.
    """
    import torch  # here, so that tools reading result files (submit, leaderboard) start without torch

    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same samples on both sides, got {x.shape[0]} and {y.shape[0]} rows")
    x, y = x - x.mean(0), y - y.mean(0)
    norm = torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)
    return float(torch.linalg.norm(y.T @ x) ** 2 / norm) if norm > 0 else float("nan")


def _check_pair(result: Any, joint: Any) -> None:
    a, b = result.attrs, joint.attrs
    if a["protocol_hash"] != b["protocol_hash"]:
        raise UserError(
            f"'{joint.path}' was made under another protocol ({b['protocol_hash'][:12]}) than "
            f"'{result.path}' ({a['protocol_hash'][:12]}); compare runs of one protocol"
        )
    if b["strategy"] != "joint":
        raise UserError(f"'{joint.path}' is a '{b['strategy']}' run, not a joint one")


def gap_to_joint(result: Any, joint: Any) -> dict[str, float]:
    """Gaps between a run and the joint run of the same protocol (two :class:`ssl_bench.results.Result`).

    ``gap_final_avg_acc`` = joint final_avg_acc - run final_avg_acc (positive: the stream costs
    accuracy); ``cka_to_joint`` = linear CKA between the two final backbones on the stored
    evaluation subset, when both files have ``metrics/cka/features``.
    """
    _check_pair(result, joint)
    out = {"gap_final_avg_acc": summarize(joint.arrays)["final_avg_acc"] - summarize(result.arrays)["final_avg_acc"]}
    cka = cka_to_joint(result, joint)
    if cka is not None:
        out["cka_to_joint"] = cka
    return out


def cka_to_joint(result: Any, joint: Any) -> float | None:
    """Linear CKA between the final features stored by the ``cka`` evaluator in two result files (None if absent)."""
    key, idx = "metrics/cka/features", "metrics/cka/index"
    if key not in result.arrays or key not in joint.arrays:
        return None
    ia, ib = np.asarray(result[idx])[-1], np.asarray(joint[idx])[-1]
    if not np.array_equal(ia, ib):
        raise UserError(
            f"'{result.path}' and '{joint.path}' stored CKA features of different samples; "
            "they must share the protocol, stream and seed"
        )
    return linear_cka(np.asarray(result[key])[-1], np.asarray(joint[key])[-1])
