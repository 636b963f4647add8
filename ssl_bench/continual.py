"""Continual-learning summaries derived from the accuracy matrix (the same code writes and checks them)."""

from __future__ import annotations

import numpy as np


def summarize(acc_matrix: np.ndarray, acc_init: np.ndarray | None = None) -> dict[str, float]:
    """Headline numbers of one run; every value is recomputable from the stored arrays."""
    acc = np.asarray(acc_matrix, dtype=float)
    out = {"final_avg_acc": float(acc[-1].mean())}
    if acc_init is not None:
        out["init_avg_acc"] = float(np.mean(acc_init))
    return out
