"""ssl-bench verify: re-run a file's seed from its stored configuration and compare within the stated tolerance."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from ssl_bench import protocol as protocols
from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.results import continual
from ssl_bench.results import reproduce as verify
from tests.test_leaderboard import make_result, rehash


def test_a_real_run_reproduces_and_a_consistent_forgery_does_not(tiny_protocol, tmp_path, capsys, one_thread):
    assert main(["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path / "runs")]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert main(["verify", str(path)]) == 2  # tiny is not a CPU-sized shipped protocol
    assert "not CPU-sized" in capsys.readouterr().err
    assert main(["-q", "verify", str(path), "--any-protocol", "--keep", str(tmp_path / "again")]) == 0
    assert capsys.readouterr().out.startswith(f"reproduced: {path} (largest |difference| 0.000")  # same machine, same threads

    # a forgery that every other check accepts: better numbers, summary and content hash made the way ssl-bench makes them
    with h5py.File(path, "r+") as f:
        f["metrics/acc_matrix"][...] = np.clip(f["metrics/acc_matrix"][()] + 0.3, 0, 1)
        arrays = {k: f[k][()] for k in ("metrics/acc_matrix", "metrics/acc_init", "phases/experiences")}
        for key, value in continual.summarize(arrays).items():
            f["summary"].attrs[key] = value
    rehash(path)
    results.check(results.Result(path))  # passes: only re-running can tell
    [again] = (tmp_path / "again").glob("*.h5")
    outcome = verify.compare(results.Result(path), results.Result(again))
    assert not outcome.ok and any("final_avg_acc" in f for f in outcome.failures)
    assert any("metrics/acc_matrix differs by up to" in f for f in outcome.failures)


def test_protocols_that_are_not_cpu_sized_are_refused_or_skipped(tmp_path, capsys):
    big = make_result(tmp_path, "simclr", "instance", "sequential", 0, proto=protocols.load("cifar100-s3l"))
    assert main(["verify", str(big)]) == 2
    assert "protocol cifar100-s3l-v2 is not CPU-sized" in capsys.readouterr().err
    assert main(["verify", "--skip-non-cpu", str(big)]) == 0
    assert capsys.readouterr().out.startswith(f"skipped: {big}: protocol cifar100-s3l-v2 is not CPU-sized")


def test_cpu_sized_means_listed_and_unchanged():
    assert verify.cpu_sized(protocols.load("smoke")) and not verify.cpu_sized(protocols.load("tinyimagenet-s3l"))
    changed = protocols.load("smoke")
    changed = changed.model_copy(update={"train": changed.train.model_copy(update={"epochs_per_experience": 500})})
    assert not verify.cpu_sized(changed)


def test_edited_files_are_refused_before_any_training(tmp_path, capsys):
    path = make_result(tmp_path, "simclr", "instance", "sequential", 0)
    with h5py.File(path, "r+") as f:
        f.attrs["method"] = "byol"
    assert main(["verify", str(path)]) == 2
    assert "differs from the run's stored configuration" in capsys.readouterr().err


@pytest.mark.parametrize("delta, ok", [(0.0, True), (verify.CELL_TOLERANCE / 2, True), (verify.CELL_TOLERANCE + 0.01, False)])
def test_compare_uses_the_stated_tolerances(tmp_path, delta, ok):
    acc = np.full((4, 4), 0.5)
    a = make_result(tmp_path / "a", "simclr", "instance", "sequential", 0, acc=acc)
    bumped = acc.copy()
    bumped[0, 1] += delta  # one cell; the summary means move by at most delta / 4
    b = make_result(tmp_path / "b", "simclr", "instance", "sequential", 0, acc=bumped)
    assert verify.compare(results.Result(a), results.Result(b)).ok == ok
