"""ssl-bench verify: re-run a file's seed from its stored configuration and judge the difference by what the
machines explain (bit-identity on the same machine, the seeds' spread across machines)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from ssl_bench import protocol as protocols
from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.engine import record
from ssl_bench.results import continual
from ssl_bench.results import reproduce as verify
from tests.test_leaderboard import make_result, rehash


def forge(path: Path, delta: float) -> None:
    """A consistent forgery: one accuracy raised by ``delta``, the summary recomputed with continual.summarize and
    the content hash recomputed, so every check but re-running accepts it."""
    with h5py.File(path, "r+") as f:
        acc = f["metrics/acc_matrix"][()]
        acc[-1, 0] = min(1.0, acc[-1, 0] + delta)
        f["metrics/acc_matrix"][...] = acc
        arrays = {k: f[k][()] for k in ("metrics/acc_matrix", "metrics/acc_init", "phases/experiences")}
        for key, value in continual.summarize(arrays).items():
            f["summary"].attrs[key] = value
    rehash(path)
    results.check(results.Result(path))  # passes: only re-running can tell


def test_a_real_run_reproduces_bit_for_bit_and_a_3_point_forgery_does_not(tiny_protocol, tmp_path, capsys, one_thread):
    assert main(["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path / "runs")]) == 0
    path = Path(capsys.readouterr().out.strip())
    stored = results.Result(path)
    for key in verify.MACHINE_KEYS:  # every file records what decides bit-identity
        assert key in stored.attrs, key
    assert verify.machine_differences(stored.attrs, verify.here()) == []
    assert main(["verify", str(path)]) == 2  # tiny is not a shipped protocol
    assert "not a shipped protocol of a CPU family" in capsys.readouterr().err

    forged = tmp_path / "forged" / path.name
    forged.parent.mkdir()
    forged.write_bytes(path.read_bytes())
    forge(forged, 0.03)
    keep = tmp_path / "again"
    assert main(["-q", "verify", str(forged), "--any-protocol", "--keep", str(keep)]) == 1
    captured = capsys.readouterr()
    assert "note:" not in captured.out  # the machine that made it
    # the same machine: bit-identity required, so 3 points on one accuracy fail
    assert f"'{forged}' does not reproduce: metrics/acc_matrix differs in 1 value(s), by up to 0.03" in captured.err
    assert (
        "summary final_avg_acc differs" in captured.err and "where a re-run on the same machine is bit-identical" in captured.err
    )
    # and the genuine file is bit-identical to the re-run: every number, the loss curve included
    [again] = keep.glob("*.h5")
    genuine = verify.compare(stored, results.Result(again))
    assert genuine.ok and set(genuine.differences.values()) == {0.0} and "train/loss" in genuine.differences

    # judged from another CPU (no other seeds next to it): 3 points is beyond the 2-point cap
    outcome = verify.compare(results.Result(forged), results.Result(again), ["cpu_model 'a' in the file, 'b' here"])
    assert not outcome.ok and outcome.failures[0].startswith("metrics/acc_matrix[1, 0] is")
    assert "> 0.0200, 1 value(s) over)" in outcome.failures[0]


def test_verify_says_when_it_runs_on_another_cpu(tmp_path, capsys, monkeypatch):
    path = make_result(tmp_path, "simclr", "instance", "sequential", 0)
    machine = ["cpu_model 'Example CPU' in the file, 'Other CPU' here"]
    monkeypatch.setattr(verify, "verify", lambda p, **kw: verify.Outcome(Path(p), differences={"x": 0.01}, machine=machine))
    assert main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"note: {path}: this machine is not the one that made the file (cpu_model 'Example CPU' in the file" in out
    assert f"reproduced: {path} (largest |difference| 0.010; another machine than the file's" in out
    assert "each number within min(fewer than 2 other seeds' files next to it, so the cap alone, 0.02)" in out
    monkeypatch.setattr(verify, "verify", lambda p, **kw: verify.Outcome(Path(p), differences={"x": 0.0}))
    assert main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == f"reproduced: {path} (largest |difference| 0.000; same CPU, flags, threads and versions as the file: " + (
        "every number must be bit-identical)\n"
    )


def test_protocols_that_are_not_cpu_family_are_refused_or_skipped(tmp_path, capsys):
    big = make_result(tmp_path, "simclr", "instance", "sequential", 0, proto=protocols.load("cifar100-s3l"))
    assert main(["verify", str(big)]) == 2
    assert "protocol cifar100-s3l-v2 is not a shipped protocol of a CPU family" in capsys.readouterr().err
    assert main(["verify", "--skip-non-cpu", str(big)]) == 0
    assert capsys.readouterr().out.startswith(f"skipped: {big}: protocol cifar100-s3l-v2 is not a shipped protocol")


def test_cpu_sized_means_a_shipped_cpu_family_protocol_unchanged():
    assert verify.cpu_sized(protocols.load("smoke")) and verify.cpu_sized(protocols.load("tinyimagenet-cpu"))
    assert not verify.cpu_sized(protocols.load("tinyimagenet-s3l"))  # family s3l
    changed = protocols.load("smoke")
    changed = changed.model_copy(update={"train": changed.train.model_copy(update={"epochs_per_experience": 500})})
    assert not verify.cpu_sized(changed)


def test_edited_files_are_refused_before_any_training(tmp_path, capsys):
    path = make_result(tmp_path, "simclr", "instance", "sequential", 0)
    with h5py.File(path, "r+") as f:
        f.attrs["method"] = "byol"
    assert main(["verify", str(path)]) == 2
    assert "differs from the run's stored configuration" in capsys.readouterr().err


def test_the_environment_records_the_cpu_and_the_libraries():
    env = record.environment()
    for key in ("cpu_model", "cpu_flags", "cpu_capability", "blas", "onednn", "onednn_enabled"):
        assert key in env, key
    text = "processor\t: 0\nmodel name\t: Example CPU\nflags\t\t: fpu sse2 sse4_2 avx2 avx512f amx_tile fma ht\n\n"
    text += "processor\t: 1\nmodel name\t: Example CPU\nflags\t\t: fpu\n"
    assert record.cpu(text) == {"cpu_model": "Example CPU", "cpu_flags": "amx_tile avx2 avx512f fma sse4_2"}


def test_same_machine_means_every_recorded_key_equal():
    env = {k: f"v-{k}" for k in verify.MACHINE_KEYS}
    assert verify.machine_differences(env, env) == []
    other = {**env, "threads": 4}
    assert verify.machine_differences(env, other) == ["threads 'v-threads' in the file, 4 here"]
    old = {k: v for k, v in env.items() if k != "cpu_flags"}  # a file from before the CPU was recorded
    assert verify.machine_differences(old, env) == ["the file does not record cpu_flags"]


def _acc(bump: float = 0.0, seed_shift: float = 0.0) -> np.ndarray:
    acc = np.full((4, 4), 0.5) + seed_shift
    acc[0, 1] += bump
    return acc


def test_on_the_same_machine_any_difference_fails(tmp_path):
    a = make_result(tmp_path / "a", "simclr", "instance", "sequential", 0, acc=_acc())
    b = make_result(tmp_path / "b", "simclr", "instance", "sequential", 0, acc=_acc(1e-6))
    assert verify.compare(results.Result(a), results.Result(a)).ok
    outcome = verify.compare(results.Result(a), results.Result(b))
    assert not outcome.ok and outcome.same_machine
    assert any(f.startswith("metrics/acc_matrix differs in 1 value(s)") for f in outcome.failures)


@pytest.mark.parametrize(
    "spread, bump, ok",
    [
        (None, 0.015, True),  # no other seeds: the 2-point cap alone
        (None, 0.025, False),
        (0.001, 0.0025, True),  # other seeds within 0.001: 3 sd is about 0.003 (the cap does not bind)
        (0.001, 0.006, False),
        (0.05, 0.025, False),  # seeds far apart: the cap binds
    ],
)
def test_across_machines_a_number_may_move_by_min_3_sd_over_seeds_and_2_points(tmp_path, spread, bump, ok):
    """The file's accuracy is ``bump`` away from the re-run's; the spread comes from the other seeds and the re-run,
    never from the file judged (a forged value cannot widen its own tolerance)."""
    a = make_result(tmp_path, "simclr", "instance", "sequential", 0, acc=_acc(bump))
    others = []
    if spread is not None:
        for seed, shift in ((1, spread), (2, -spread)):
            others.append(results.Result(make_result(tmp_path, "simclr", "instance", "sequential", seed, acc=_acc(0, shift))))
    again = make_result(tmp_path / "again", "simclr", "instance", "sequential", 0, acc=_acc())
    assert [o.path for o in verify.other_seeds(results.Result(a))] == [o.path for o in others]
    outcome = verify.compare(results.Result(a), results.Result(again), ["cpu_model 'x' in the file, 'y' here"], others)
    assert outcome.ok == ok
    assert not outcome.same_machine and "another machine than the file's (cpu_model 'x'" in outcome.describe()
