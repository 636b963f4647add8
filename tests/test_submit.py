"""ssl-bench submit: handmade result files (no training) accepted, copied, and rejected when tampered with."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from ssl_bench import protocol as protocols
from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.errors import UserError
from ssl_bench.results import submission as submit
from tests.test_leaderboard import make_result, other_protocol

SMOKE = protocols.load("smoke")
REPO = Path(__file__).resolve().parents[1]


def make_checkout(root: Path) -> Path:
    """A minimal ssl-bench checkout at ``root`` (its pyproject and this repository's plugins); its leaderboard."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "ssl-bench"\n')
    (root / "plugins").symlink_to(REPO / "plugins")
    return root / "leaderboard" / "results"


@pytest.fixture
def board(tmp_path):
    """The leaderboard/results folder of a minimal ssl-bench checkout."""
    return make_checkout(tmp_path / "ssl-bench")


@pytest.fixture
def runs(tmp_path):
    """simclr / instance / sequential for every seed of the shipped smoke protocol."""
    return [make_result(tmp_path / "runs", "simclr", "instance", "sequential", seed) for seed in SMOKE.seeds]


def test_valid_files_are_copied_into_protocol_and_method_folders(runs, board, capsys):
    to = board
    assert main(["submit", *map(str, runs), "--to", str(to)]) == 0
    out = capsys.readouterr().out
    copied = sorted(to.rglob("*.h5"))
    assert [p.relative_to(to).parts[:2] for p in copied] == [("smoke-v2", "simclr")] * len(SMOKE.seeds)
    assert [p.name for p in copied] == sorted(p.name for p in runs)
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(copied, sorted(runs)))
    assert out.count("submitted:") == len(SMOKE.seeds) and f"submitted to {to.resolve()}\n" in out  # absolute
    # the same files again: nothing changes; CI's --check on the copies in place passes
    assert main(["submit", *map(str, runs), "--to", str(to)]) == 0
    assert main(["submit", "--check", *map(str, copied), "--to", str(to)]) == 0
    # one more seed later, for a group already complete in the leaderboard, is checked against the files there
    assert main(["submit", "--check", str(copied[0]), "--to", str(to)]) == 0


def _edit_summary(path, key, value):
    with h5py.File(path, "r+") as f:
        f["summary"].attrs[key] = value


def test_hand_edited_number_is_rejected_naming_the_key(runs, board, capsys):
    r = results.Result(runs[1])
    _edit_summary(runs[1], "final_avg_acc", r.summary["final_avg_acc"] + 0.01)
    to = board
    assert main(["submit", *map(str, runs), "--to", str(to)]) == 2
    err = capsys.readouterr().err
    assert "summary key 'final_avg_acc'" in err and runs[1].name in err
    assert not to.exists()  # all or nothing: the valid files were not copied either


@pytest.mark.parametrize("key", ["bwt", "forgetting_max"])
def test_any_edited_summary_key_is_caught(runs, key):
    r = results.Result(runs[0])
    _edit_summary(runs[0], key, r.summary[key] - 1e-4)
    with pytest.raises(UserError, match=f"summary key '{key}'"):
        submit.validate(runs[0])


def test_missing_or_extra_summary_keys_are_rejected(runs):
    with h5py.File(runs[0], "r+") as f:
        del f["summary"].attrs["avg_acc"]
    with pytest.raises(UserError, match="summary key 'avg_acc' is missing"):
        submit.validate(runs[0])
    _edit_summary(runs[1], "best_ever", 0.99)
    with pytest.raises(UserError, match="'best_ever' = 0.99 cannot be recomputed"):
        submit.validate(runs[1])


def test_edited_raw_matrix_disagrees_with_stored_summary(runs):
    with h5py.File(runs[2], "r+") as f:
        f["metrics/acc_matrix"][-1, 0] = 0.999
    with pytest.raises(UserError, match="summary key '(final_avg_acc|avg_acc|bwt|forgetting_max|forgetting_init_final)'"):
        submit.validate(runs[2])


def test_all_protocol_seeds_are_required(runs, board):
    with pytest.raises(UserError, match=r"seed\(s\) \[2\] are missing"):
        submit.submit(runs[:2], to=board)
    with pytest.raises(UserError, match="same run"):
        submit.submit([runs[0], runs[0], *runs[1:]], to=board)


def test_foreign_protocol_hash_and_unshipped_protocol_are_rejected(tmp_path):
    old = make_result(tmp_path, "simclr", "instance", "sequential", 0, proto=other_protocol())
    with pytest.raises(UserError, match="shipped smoke-v2 has hash"):
        submit.validate(old)
    custom = SMOKE.model_copy(update={"name": "mine"})
    with pytest.raises(UserError, match="'mine', which does not ship"):
        submit.validate(make_result(tmp_path, "simclr", "instance", "sequential", 0, proto=custom))


def test_stored_protocol_must_hash_to_the_recorded_hash(runs):
    with h5py.File(runs[0], "r+") as f:
        text = json.loads(f["protocol_json"][()].decode())
        text["train"]["batch_size"] = 64  # trained under other settings, claiming the shipped hash
        del f["protocol_json"]
        f.create_dataset("protocol_json", data=json.dumps(text), dtype=h5py.string_dtype("utf-8"))
    with pytest.raises(UserError, match="the file was edited"):
        submit.validate(runs[0])


def test_plugin_versions_must_be_recorded(tmp_path):
    path = make_result(tmp_path, "mine", "instance", "sequential", 0, plugins={"simclr": "0.1.0", "mine": "unknown"})
    with pytest.raises(UserError, match="plugin\\(s\\) mine recorded no version"):
        submit.validate(path)
    path = make_result(
        tmp_path / "b",
        "mine",
        "instance",
        "sequential",
        0,
        plugins={"simclr": "0.1.0", "mine": "1.0"},
        config={"plugins": ["my/other_plugin.py"]},
    )
    with pytest.raises(UserError, match="loaded plugin 'my/other_plugin.py' but recorded no version"):
        submit.validate(path)


def test_schema_and_matrix_checks(tmp_path):
    path = make_result(tmp_path, "simclr", "instance", "sequential", 0)
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = results.SCHEMA_VERSION + 1
    with pytest.raises(UserError, match="newer than this ssl-bench reads"):
        submit.validate(path)
    bad = make_result(tmp_path / "b", "simclr", "instance", "sequential", 0, acc=np.full((3, 3), 0.5))
    with pytest.raises(UserError, match=r"shape \(3, 3\), expected \[phases, 4\]"):
        submit.validate(bad)


def test_a_different_file_for_a_submitted_run_needs_replace(runs, tmp_path, board):
    to = board
    submit.submit(runs, to=to)
    again = make_result(
        tmp_path / "again", "simclr", "instance", "sequential", 0, rng=np.random.default_rng(7)
    )  # another seed-0 run
    with pytest.raises(UserError, match="--replace"):
        submit.submit([again, *runs[1:]], to=to)
    submit.submit([again, *runs[1:]], to=to, replace=True)
    assert (to / "smoke-v2" / "simclr" / again.name).read_bytes() == again.read_bytes()


# ---------------------------------------------------------------------- the target, and plugins CI can load
def test_the_target_is_an_ssl_bench_checkouts_leaderboard(runs, tmp_path, board, monkeypatch, capsys):
    """From a plugin's package folder, submit once made ./leaderboard/results there and passed its seed check."""
    package = tmp_path / "ssl-bench-mymethod"
    (package / "src").mkdir(parents=True)
    (package / "pyproject.toml").write_text('[project]\nname = "ssl-bench-mymethod"\n')
    monkeypatch.chdir(package)
    assert main(["submit", *map(str, runs)]) == 2
    assert "is not inside an ssl-bench checkout" in capsys.readouterr().err
    for wrong in (package / "leaderboard" / "results", board.parent, tmp_path / "board"):
        assert main(["submit", *map(str, runs), "--to", str(wrong)]) == 2
        assert "is not the leaderboard/results folder of an ssl-bench checkout" in capsys.readouterr().err
    assert not (package / "leaderboard").exists()
    inside = board.parent.parent / "runs"
    inside.mkdir()
    monkeypatch.chdir(inside)  # anywhere inside the checkout: its leaderboard
    assert main(["submit", *map(str, runs)]) == 0
    assert f"submitted to {board.resolve()}\n" in capsys.readouterr().out
    assert len(list(board.rglob("*.h5"))) == len(runs)


def test_a_method_ci_cannot_load_is_refused_naming_the_fix(tmp_path, board):
    runs = [make_result(tmp_path / "runs", "dcl", "instance", "sequential", s, plugins={"dcl": "0.1.0"}) for s in SMOKE.seeds]
    with pytest.raises(UserError, match="no plugin installed here provides the method 'dcl'.*plugins.txt"):
        submit.submit(runs, to=board)
    assert not board.exists()
    # a run that loaded a plugin from a file: CI has no such file
    runs = [
        make_result(
            tmp_path / "f",
            "simclr",
            "instance",
            "sequential",
            s,
            config={"plugins": ["../mine/dcl.py"]},
            plugins={"simclr": "0.1.0", "dcl": "0.1.0"},
        )
        for s in SMOKE.seeds
    ]
    with pytest.raises(UserError, match="loaded the plugin file '../mine/dcl.py'.*re-run without --plugin"):
        submit.submit(runs, to=board, check_only=True)


def test_a_built_in_missing_from_the_target_checkout_is_refused(runs, tmp_path):
    other = tmp_path / "old-ssl-bench"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "ssl-bench"\n')
    (other / "plugins" / "methods").mkdir(parents=True)  # a checkout without plugins/methods/simclr.py
    with pytest.raises(UserError, match="has no plugins/methods/simclr.py"):
        submit.submit(runs, to=other / "leaderboard" / "results")


class _Dist:
    name = "ssl-bench-dcl"


class _EntryPoint:
    dist = _Dist()


def test_a_package_must_be_pinned_in_plugins_txt_at_the_runs_version(tmp_path, board, monkeypatch):
    from ssl_bench.registry import Registry

    registry = Registry.discover()
    entry = registry.entries["method"]["simclr"]  # stands in for a method an installed package provides
    entry.plugin.name, entry.plugin.source = "dcl", "entry point (ssl-bench-dcl)"
    monkeypatch.setattr(submit.md, "entry_points", lambda group, name: [_EntryPoint()] if name == "dcl" else [])
    runs = [make_result(tmp_path / "r", "simclr", "instance", "sequential", s, plugins={"dcl": "0.2.0"}) for s in SMOKE.seeds]
    listed = board.parent / "plugins.txt"
    with pytest.raises(UserError, match=f"package ssl-bench-dcl 0.2.0, which {listed} does not list.*'ssl-bench-dcl==0.2.0'"):
        submit.submit(runs, to=board, registry=registry)
    listed.parent.mkdir(parents=True)
    for line, error in (
        ("ssl-bench-dcl>=0.2", "'ssl-bench-dcl>=0.2' is not pinned"),
        ("ssl-bench-dcl @ git+https://example.org/dcl.git@main", "a URL must end in @COMMIT"),
        ("ssl_bench_dcl==0.1.0  # the last release", "pins ssl-bench-dcl==0.1.0, but the run used ssl-bench-dcl 0.2.0"),
    ):
        listed.write_text(f"# outside plugins\n{line}\n")
        with pytest.raises(UserError, match=error):
            submit.submit(runs, to=board, registry=registry)
    for line in ("ssl-bench-dcl==0.2.0", f"ssl-bench-dcl @ git+https://example.org/dcl.git@{'a1' * 20}"):
        listed.write_text(line + "\n")
        assert len(submit.submit(runs, to=board, registry=registry, check_only=True)) == len(runs)
    assert os.listdir(board.parent) == ["plugins.txt"]  # --check copies nothing
