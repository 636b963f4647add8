"""Continual-learning summaries against a handmade accuracy matrix, and comparisons with a joint run."""

import json

import numpy as np
import pytest

from ssl_bench import results
from ssl_bench.errors import UserError
from ssl_bench.results import continual

# R[i, j]: after phase i, on experience j. R[1, 0] > R[0, 0], so max-based and initial-minus-final
# forgetting differ for experience 0.
R = np.array([[0.5, 0.2, 0.1], [0.6, 0.8, 0.3], [0.3, 0.5, 0.7]])
B = np.array([0.1, 0.1, 0.2])


def test_sequential_summary_by_hand():
    s = continual.summarize({"metrics/acc_matrix": R, "metrics/acc_init": B, "phases/experiences": json.dumps([[0], [1], [2]])})
    assert s["final_avg_acc"] == pytest.approx((0.3 + 0.5 + 0.7) / 3)
    assert s["init_avg_acc"] == pytest.approx(0.4 / 3)
    assert s["avg_acc"] == pytest.approx((0.5 + (0.6 + 0.8) / 2 + 0.5) / 3)
    assert s["bwt"] == pytest.approx(((0.3 - 0.5) + (0.5 - 0.8)) / 2)
    assert s["forgetting_max"] == pytest.approx(((0.6 - 0.3) + (0.8 - 0.5)) / 2)
    assert s["forgetting_init_final"] == pytest.approx(((0.5 - 0.3) + (0.8 - 0.5)) / 2)
    assert s["forgetting_init_final"] == pytest.approx(-s["bwt"])  # identical for sequential runs, by definition
    assert s["fwt"] == pytest.approx(((0.2 - 0.1) + (0.3 - 0.2)) / 2)
    assert "collapse_auc" not in s
    assert set(s) <= set(continual.DEFINITIONS)
    # without phases/experiences a square matrix is read as sequential
    assert continual.summarize({"metrics/acc_matrix": R, "metrics/acc_init": B}) == s


def test_forgetting_max_ignores_accuracy_before_the_experience_was_trained():
    # experience 1 is probed at 0.9 after phase 0 (forward transfer), before phase 1 trains it
    r = np.array([[0.5, 0.9, 0.1], [0.6, 0.8, 0.3], [0.3, 0.5, 0.7]])
    s = continual.summarize({"metrics/acc_matrix": r, "phases/experiences": json.dumps([[0], [1], [2]])})
    # max over l >= first(j) (mammoth, Avalanche): (0.6 - 0.3) + (0.8 - 0.5); the old max over all l < P-1 gave 0.9 - 0.5
    assert s["forgetting_max"] == pytest.approx(((0.6 - 0.3) + (0.8 - 0.5)) / 2)


def test_joint_run_has_no_transfer_or_forgetting():
    s = continual.summarize(
        {
            "metrics/acc_matrix": R[2:],
            "metrics/acc_init": B,
            "phases/experiences": "[[0, 1, 2]]",
            "metrics/collapse/auc": np.array([0.7]),
        }
    )
    assert s == pytest.approx({"final_avg_acc": 0.5, "avg_acc": 0.5, "init_avg_acc": 0.4 / 3, "collapse_auc": 0.7})


def test_collapse_auc_is_the_last_phase():
    s = continual.summarize({"metrics/acc_matrix": R, "metrics/collapse/auc": np.array([0.9, 0.8, 0.75])})
    assert s["collapse_auc"] == pytest.approx(0.75)


def test_rectangular_matrix_needs_the_phase_plan():
    with pytest.raises(UserError, match="phases/experiences"):
        continual.summarize({"metrics/acc_matrix": R[:2]})
    with pytest.raises(UserError, match="2 phases"):
        continual.summarize({"metrics/acc_matrix": R, "phases/experiences": "[[0], [1, 2]]"})


def _write(path, strategy, acc, features, index, protocol_hash="abc"):
    arrays = {
        "metrics/acc_matrix": acc,
        "metrics/acc_init": B,
        "phases/experiences": json.dumps([[i] for i in range(len(acc))]),
        "metrics/cka/features": features,
        "metrics/cka/index": index,
    }
    if strategy == "joint":
        arrays["phases/experiences"] = "[[0, 1, 2]]"
    results.write(path, {"protocol_hash": protocol_hash, "strategy": strategy}, arrays)
    return results.Result(path)


def test_gap_and_cka_to_joint(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float16)
    index = np.tile(np.arange(50), (3, 1))
    seq = _write(tmp_path / "seq.h5", "sequential", R, np.stack([x, x, x]), index)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    joint = _write(tmp_path / "joint.h5", "joint", np.array([[0.6, 0.7, 0.8]]), (2.0 * x.astype(float) @ q)[None], index[:1])
    gap = continual.gap_to_joint(seq, joint)
    assert gap["gap_final_avg_acc"] == pytest.approx(0.7 - 0.5)
    assert gap["cka_to_joint"] == pytest.approx(1.0, abs=1e-3)  # a rotated, scaled copy (stored as float16)

    other = _write(tmp_path / "other.h5", "joint", np.array([[0.6, 0.7, 0.8]]), x[None], index[:1] + 1)
    with pytest.raises(UserError, match="different samples"):
        continual.cka_to_joint(seq, other)
    with pytest.raises(UserError, match="not a joint"):
        continual.gap_to_joint(joint, seq)
    foreign = _write(tmp_path / "foreign.h5", "joint", np.array([[0.6, 0.7, 0.8]]), x[None], index[:1], protocol_hash="def")
    with pytest.raises(UserError, match="another protocol"):
        continual.gap_to_joint(seq, foreign)


def test_linear_cka_invariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert continual.linear_cka(x, x) == pytest.approx(1.0)
    assert continual.linear_cka(x, 3.5 * x @ q) == pytest.approx(1.0)
    assert continual.linear_cka(x, rng.normal(size=(200, 16))) < 0.3
