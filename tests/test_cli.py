"""End-to-end: the ssl-bench command as a user runs it, on a tiny protocol."""

import textwrap
from pathlib import Path

import numpy as np
import pytest

from ssl_bench import results
from ssl_bench.cli import main
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_run_writes_a_valid_result_file(tiny_protocol, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["-q", "run", "--protocol", str(tiny_protocol), "--out", str(out)]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.parent == out and path.is_file()
    r = results.Result(path)
    for key in (
        "schema_version",
        "protocol",
        "protocol_hash",
        "method",
        "stream",
        "strategy",
        "seed",
        "ssl_bench_version",
        "torch_version",
        "device",
        "git_commit",
    ):
        assert key in r.attrs, key
    assert (r.attrs["method"], r.attrs["stream"], r.attrs["strategy"], r.attrs["seed"]) == ("simclr", "instance", "sequential", 0)
    acc = r.acc_matrix
    assert acc.shape == (2, 2) and np.all((acc >= 0) & (acc <= 1))
    assert r.config["protocol_hash"] == r.attrs["protocol_hash"] and r.config["method"] == "simclr"
    assert len(r["train/loss"]) == int(r["phases/steps"].sum()) == r.attrs["steps"]
    assert np.isfinite(r["train/loss"]).all()
    assert r.summary["final_avg_acc"] == pytest.approx(acc[-1].mean())
    assert not list(out.glob(".*"))  # no temporary or checkpoint files left behind

    assert main(["show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "accuracy matrix" in shown and "simclr" in shown
    assert main(["leaderboard", "--results", str(out)]) == 0
    table = capsys.readouterr().out
    assert "### stream: instance" in table and "| simclr | sequential |" in table  # rows grouped by stream


def test_example_plugin_runs_with_plugin_flag(tiny_protocol, tmp_path, capsys):
    example = ROOT / "examples" / "my_method.py"
    assert main(["-q", "run", "--plugin", str(example), "--protocol", str(tiny_protocol), "--out", str(tmp_path)]) == 0
    r = results.Result(capsys.readouterr().out.strip())
    assert r.attrs["method"] == "align-uniform"
    assert "my_method" in r.attrs["plugins"]


def test_joint_is_compute_matched_with_sequential(tiny_protocol, tmp_path, capsys):
    paths = {}
    for strategy in ("sequential", "joint"):
        assert main(["-q", "run", "--protocol", str(tiny_protocol), "--strategy", strategy, "--out", str(tmp_path)]) == 0
        paths[strategy] = results.Result(capsys.readouterr().out.strip())
    seq, joint = paths["sequential"], paths["joint"]
    assert seq.attrs["steps"] == joint.attrs["steps"]
    assert seq.acc_matrix.shape == (2, 2) and joint.acc_matrix.shape == (1, 2)


def test_crashed_run_leaves_no_result_and_resumes(tiny_protocol, tmp_path, monkeypatch, capsys):
    crash = tmp_path / "crash_plugin.py"
    crash.write_text(
        textwrap.dedent("""
        import os
        from ssl_bench import hookimpl

        @hookimpl
        def ssl_bench_phase_start(run, phase):
            if os.environ.get("CRASH_AT") == phase.name:
                raise RuntimeError("simulated crash")
    """)
    )
    out = tmp_path / "runs"
    args = ["-q", "run", "--plugin", str(crash), "--protocol", str(tiny_protocol), "--out", str(out)]
    monkeypatch.setenv("CRASH_AT", "experience 1")
    assert main(args) == 1
    assert "simulated crash" in capsys.readouterr().err
    assert not list(out.glob("*.h5"))
    assert len(list(out.glob(".*.ckpt"))) == 1
    monkeypatch.delenv("CRASH_AT")
    assert main(args) == 0
    r = results.Result(capsys.readouterr().out.strip())
    assert r.acc_matrix.shape == (2, 2) and len(r["train/loss"]) == r.attrs["steps"]
    assert not list(out.glob(".*.ckpt"))


def test_resumed_run_equals_uninterrupted_run(tiny_protocol, tmp_path, monkeypatch, capsys):
    crash = tmp_path / "crash2.py"
    crash.write_text(
        "import os\nfrom ssl_bench import hookimpl\n@hookimpl\ndef ssl_bench_phase_start(run, phase):\n"
        "    if os.environ.get('CRASH_AT') == phase.name:\n        raise KeyboardInterrupt\n"
    )
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    base = ["-q", "run", "--plugin", str(crash), "--protocol", str(tiny_protocol)]
    assert main(base + ["--out", str(whole)]) == 0
    a = results.Result(capsys.readouterr().out.strip())
    monkeypatch.setenv("CRASH_AT", "experience 1")
    assert main(base + ["--out", str(parts)]) == 130
    monkeypatch.delenv("CRASH_AT")
    assert main(base + ["--out", str(parts)]) == 0
    b = results.Result(capsys.readouterr().out.strip())
    np.testing.assert_allclose(a["train/loss"], b["train/loss"], rtol=1e-4)
    np.testing.assert_allclose(a.acc_matrix, b.acc_matrix, atol=1e-6)


@pytest.mark.parametrize(
    "case", ["missing_plugin", "misspelt_method", "bad_signature", "unknown_key", "wrong_type", "unwritable_out"]
)
def test_bad_input_one_line_exit_2_no_result(case, tiny_protocol, tmp_path):
    out = tmp_path / "runs"
    args = ["run", "--protocol", tiny_protocol, "--out", out]
    if case == "missing_plugin":
        args += ["--plugin", "no_such_plugin_anywhere"]
        expect = "no plugin named 'no_such_plugin_anywhere'"
    elif case == "misspelt_method":
        args += ["--method", "simclrr"]
        expect = "Did you mean 'simclr'"
    elif case == "bad_signature":
        bad = tmp_path / "badsig.py"
        bad.write_text("from ssl_bench import hookimpl\n@hookimpl\ndef ssl_bench_methods(config):\n    return {}\n")
        args += ["--plugin", bad]
        expect = "wrong signature"
    elif case in ("unknown_key", "wrong_type"):
        text = tiny_protocol.read_text()
        text = (
            text.replace("batch_size = 32", "batch_size = 32\nlr_decay = 1")
            if case == "unknown_key"
            else text.replace("batch_size = 32", "batch_size = 3.5")
        )
        tiny_protocol.write_text(text)
        expect = "unknown key 'train.lr_decay'" if case == "unknown_key" else "'train.batch_size'"
    else:
        blocker = tmp_path / "a_file"
        blocker.write_text("")
        args[-1] = out = blocker / "runs"
        expect = "cannot write results to --out"
    code, stdout, stderr = run_cli(*args)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and lines[0].startswith("ssl-bench: error:")
    assert "Traceback" not in stderr
    assert not (out.exists() and list(out.rglob("*.h5")))


def test_list_shows_plugins_with_source_and_version(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "simclr" in text and "builtin" in text and "smoke" in text


def test_help_lists_every_command_with_its_help():
    import argparse
    import re

    from ssl_bench.cli import COMMANDS, build_parser

    code, stdout, _ = run_cli("--help")
    assert code == 0
    # the command list of --help: one "    name   help" line per command (names alone would match other words)
    listed = re.findall(r"^ {4}([a-z-]+)(?: {2,}\S|\n)", stdout, flags=re.M)
    assert listed == list(COMMANDS)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(COMMANDS)
    assert all(p.description for p in sub.choices.values())


@pytest.mark.slow
def test_sweep_runs_every_combination_and_skips_finished_ones(tiny_protocol, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [
        "-q",
        "sweep",
        "--protocol",
        str(tiny_protocol),
        "--strategies",
        "sequential,joint",
        "--seeds",
        "all",
        "--jobs",
        "2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    paths = capsys.readouterr().out.split()
    runs = {(r.attrs["strategy"], r.attrs["seed"]) for r in map(results.Result, paths)}
    assert runs == {("sequential", 0), ("sequential", 1), ("joint", 0), ("joint", 1)}
    stamp = {p: Path(p).stat().st_mtime_ns for p in paths}
    assert main(args) == 0  # everything exists: nothing is re-run
    assert {p: Path(p).stat().st_mtime_ns for p in capsys.readouterr().out.split()} == stamp


def test_sweep_grid_runs_the_union_of_its_products_seed_by_seed(tiny_protocol, tmp_path, capsys):
    out, grid = tmp_path / "sweep", tmp_path / "grid.toml"
    grid.write_text(
        textwrap.dedent(
            """
            [[grid]]  # claim 1's pair
            methods = ["simclr"]
            streams = ["instance"]
            strategies = ["sequential", "joint"]
            [[grid]]  # overlaps the first: joint is listed once
            methods = ["simclr"]
            streams = ["instance"]
            strategies = ["joint", "replay"]
            """
        )
    )
    dry = ["-q", "sweep", "--protocol", str(tiny_protocol), "--grid", str(grid), "--seeds", "0,1", "--out", str(out), "--dry-run"]
    assert main(dry) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-2]] == [
        f"simclr/instance/{strategy}/seed" for _ in range(2) for strategy in ("sequential", "joint", "replay")
    ]
    assert [line.split()[1] for line in lines[:-2]] == ["0"] * 3 + ["1"] * 3  # seed by seed
    assert lines[-2] == "6 of 6 runs to do (0 have result files)" and not out.exists()
    assert lines[-1].startswith("time: no estimate (no finished run of these protocols")
    run = ["-q", "run", "--protocol", str(tiny_protocol), "--strategy", "joint", "--seed", "1", "--out", str(out)]
    assert main(run) == 0
    capsys.readouterr()
    assert main(dry) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == "5 of 6 runs to do (1 have result files)"
    assert lines[-1].startswith("time: about ") and "for 5 of them" in lines[-1]  # timed by the finished run
    assert "simclr/instance/joint/seed 1" not in "\n".join(lines)


def test_sweep_grid_table_may_name_another_protocol(tiny_protocol, tmp_path, capsys):
    twin = tmp_path / "twin.toml"  # e.g. the domain stream under a protocol whose dataset has domains
    twin.write_text(tiny_protocol.read_text().replace('name = "tiny"', 'name = "twin"'))
    grid = tmp_path / "grid.toml"
    grid.write_text(
        f'[[grid]]\nmethods = ["simclr"]\nstreams = ["instance"]\nstrategies = ["sequential"]\n'
        f'[[grid]]\nmethods = ["simclr"]\nstreams = ["instance"]\nstrategies = ["sequential"]\nprotocol = "{twin}"\n'
    )
    out = tmp_path / "sweep"
    sweep = ["-q", "sweep", "--protocol", str(tiny_protocol), "--grid", str(grid), "--seeds", "0,1", "--out", str(out)]
    assert main([*sweep, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [Path(line.split()[-1]).name.split("__")[0] for line in lines[:-2]]
    assert names == ["tiny-v1", "twin-v1", "tiny-v1", "twin-v1"]  # the same cell under each protocol, seed by seed
    assert lines[-2] == "4 of 4 runs to do (0 have result files)"
    assert main([*sweep[:-4], "--seeds", "1", "--out", str(out)]) == 0
    made = {results.Result(p).attrs["protocol"] for p in capsys.readouterr().out.split()}
    assert made == {"tiny", "twin"}


@pytest.mark.parametrize(
    "text, extra, message",
    [
        ('[[grid]]\nmethods = ["simclr"]\nstreams = ["instance"]\nstrategy = ["joint"]', [], "unknown key 'strategy'"),
        (
            '[[grid]]\nmethods = ["simclr"]\nstreams = ["instance"]\nstrategies = ["joint"]\nprotocol = "nosuch"',
            [],
            "nosuch",
        ),
        ('[[grid]]\nmethods = ["simclr"]\nstreams = ["instance"]\nstrategies = ["joint"]\nprotocol = 3', [], "protocol must be"),
        ('[[grid]]\nmethods = ["simclr"]\nstreams = ["instance"]', [], "needs strategies = a list of names"),
        ('methods = ["simclr"]', [], "write one or more [[grid]] tables"),
        ("grid = [1, 2]", [], "write one or more [[grid]] tables"),
        ('[[grid]]\nmethods = ["simclr"]\nstreams = ["instance"]\nstrategies = ["jont"]', [], "unknown strategy 'jont'"),
        ('[[grid]]\nmethods = ["simclr"]\nstreams = ["instance"]\nstrategies = ["joint"]', ["--methods=byol"], "drop --methods"),
    ],
)
def test_sweep_grid_rejects_bad_files_in_one_line(tiny_protocol, tmp_path, text, extra, message):
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    code, stdout, stderr = run_cli("sweep", "--protocol", tiny_protocol, "--grid", grid, "--out", tmp_path / "o", *extra)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "o").exists()


def test_sweep_checks_every_stream_split_before_any_run(tiny_protocol, tmp_path):
    one_domain = tmp_path / "one.toml"  # the domain stream needs a domain per experience: this data has one
    one_domain.write_text(
        tiny_protocol.read_text().replace(
            "train_per_class_domain = 3, test_per_class_domain = 2, n_domains = 4",
            "train_per_class_domain = 12, test_per_class_domain = 8, n_domains = 1",
        )
    )
    code, _, stderr = run_cli(
        "-q", "sweep", "--protocol", one_domain, "--streams", "instance,domain", "--seeds", "0", "--out", tmp_path / "o"
    )
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "simclr/domain/sequential/seed 0 under tiny-v1: domain stream: 2 experiences but only 1 domains" in stderr
    assert not (tmp_path / "o").exists()  # the instance run did not start either


def test_sweep_through_submitit(tiny_protocol, tmp_path, capsys):
    pytest.importorskip("submitit")
    out = tmp_path / "sweep"
    assert (
        main(["-q", "sweep", "--protocol", str(tiny_protocol), "--seeds", "1", "--launcher", "submitit-local", "--out", str(out)])
        == 0
    )
    (path,) = capsys.readouterr().out.split()
    assert results.Result(path).attrs["seed"] == 1


def test_sweep_rejects_unknown_names_before_running(tiny_protocol, tmp_path):
    code, _, stderr = run_cli("sweep", "--protocol", tiny_protocol, "--methods", "simclr,bogus", "--out", tmp_path)
    assert code == 2 and "unknown method 'bogus'" in stderr
