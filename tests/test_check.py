"""ssl-bench check: a contributor's pre-flight (one real run on the tiny protocol, the rest without training)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.commands import check
from ssl_bench.results import Result

ROOT = Path(__file__).resolve().parents[1]


def test_example_plugin_passes_and_writes_the_pull_request_block(tiny_protocol, tmp_path, capsys):
    report_file = tmp_path / "check.md"
    rc = main(
        [
            "-q",
            "check",
            "--plugin",
            str(ROOT / "examples" / "my_method.py"),
            "--protocol",
            str(tiny_protocol),
            "--report",
            str(report_file),
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    block = report_file.read_text()
    assert block in out and "all checks passed" in block
    for row in (
        "loads",
        "hooks have valid names and signatures",
        "metadata: version",
        "metadata: paper",
        "metadata: licence",
        "names are new",
        "runs: method align-uniform",
    ):
        assert f"| ✓ | {row} |" in block, row
    assert "✗" not in out
    paths = sorted((tmp_path / "runs").glob("*.h5"))  # every seed of the protocol, where sweep writes them
    assert [Result(p).attrs["seed"] for p in paths] == [0, 1]
    for path in paths:
        r = Result(path)
        assert r.attrs["method"] == "align-uniform"
        results.check(r)  # what the engine stores passes the leaderboard's checks: summary recomputed, content hash
    gains = [Result(p).summary["final_avg_acc"] - Result(p).summary["init_avg_acc"] for p in paths]
    [row] = [line for line in block.splitlines() if "learns (gain over random init)" in line]
    assert f"align-uniform {100 * sum(gains) / 2:+.1f} [" in row and "(2 seeds)" in row and "Verdict:" in row
    assert "**Does it learn?**" in block and "\nverdict: " in out
    # the sweep finds the check's runs finished
    assert (
        main(
            [
                "-q",
                "sweep",
                "--plugin",
                str(ROOT / "examples" / "my_method.py"),
                "--protocol",
                str(tiny_protocol),
                "--out",
                str(tmp_path / "runs"),
                "--dry-run",
            ]
        )
        == 0
    )
    assert "0 of 2 runs to do" in capsys.readouterr().out
    # and check itself does not train a finished configuration again
    before = {p: p.stat().st_mtime_ns for p in paths}
    report = check.run_checks(str(ROOT / "examples" / "my_method.py"), protocol=str(tiny_protocol), out=tmp_path / "runs")
    assert report.passed and {p: p.stat().st_mtime_ns for p in paths} == before


def test_learning_verdict_beside_simclr(tiny_protocol, tmp_path):
    """The verdict follows the report's rule (a gain of at least 2 points, its 95% interval above 0); SimCLR's gain
    under the same protocol comes from the reference folder, paired by seed."""
    from ssl_bench import protocol
    from tests.test_leaderboard import make_result

    proto = protocol.load(str(tiny_protocol))
    chosen = {"method": "mine", "stream": "instance", "strategy": "sequential"}
    ref = tmp_path / "board"
    for seed in proto.seeds:  # simclr: final 0.30, init 0.250 or 0.251: gains of 5.0 and 4.9 points
        make_result(
            ref / proto.label / "simclr",
            "simclr",
            "instance",
            "sequential",
            seed,
            proto=proto,
            acc=[[0.3, 0.3]] * 2,
            init=[0.25 + 0.001 * seed] * 2,
        )
    cases = [
        ({0: 0.100, 1: 0.101}, True, "learns under tiny-v1", "better than simclr"),
        ({0: 0.01, 1: 0.04}, None, "not shown to learn under tiny-v1", "indistinguishable from simclr"),
        ({0: -0.100, 1: -0.101}, False, "worse than its random-init backbone", "worse than simclr"),
    ]
    for gains, ok, verdict, versus in cases:
        report = check.Report("mine", proto.label)
        check._check_learning(report, "mine", proto, chosen, gains, ref)
        [row] = report.rows
        assert row.ok is ok and verdict in row.detail and versus in row.detail, row.detail
        assert "simclr +4.9 [+4.3, +5.6] (2 seeds, " in row.detail  # gains 5.0 and 4.9
    report = check.Report("mine", proto.label)
    check._check_learning(report, "mine", proto, chosen, {0: 0.1}, tmp_path / "empty")
    assert report.rows[0].ok is None and "one seed gives no spread" in report.rows[0].detail
    assert "no runs of tiny-v1 (instance / sequential)" in report.rows[0].detail


def _plugin(tmp_path, name, body):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_misspelt_hook_fails_without_training(tmp_path, capsys):
    spec = _plugin(
        tmp_path,
        "typo",
        """
        '''A plugin with a misspelt hook.'''
        from ssl_bench import hookimpl

        @hookimpl
        def ssl_bench_method():
            return {}
    """,
    )
    report = check.run_checks(spec)
    marks = {r.check: r.mark for r in report.rows}
    assert marks == {"loads": "✓", "hooks have valid names and signatures": "✗"}
    assert "ssl_bench_methods" in report.rows[1].detail  # did you mean
    assert not report.passed
    assert main(["check", "--plugin", spec, "--report", str(tmp_path / "r.md")]) == 1
    assert "| ✗ | hooks have valid names and signatures |" in (tmp_path / "r.md").read_text()


def test_missing_file_and_import_error_are_failed_rows(tmp_path):
    report = check.run_checks(str(tmp_path / "nope.py"))
    assert [(r.check, r.mark) for r in report.rows] == [("loads", "✗"), ("hooks have valid names and signatures", "–")]
    spec = _plugin(tmp_path, "broken", "import not_a_module_anywhere\n")
    report = check.run_checks(spec)
    assert report.rows[0].mark == "✗" and "not_a_module_anywhere" in report.rows[0].detail


def test_incomplete_metadata_name_clash_and_crashing_method(tiny_protocol, tmp_path):
    spec = _plugin(
        tmp_path,
        "sloppy",
        """
        from ssl_bench import hookimpl
        from ssl_bench.api import Method

        class Crash(Method):  # fails when built, so the check fails fast (no training)
            def __init__(self, backbone):
                raise ValueError("boom in my method")

        @hookimpl
        def ssl_bench_methods():
            return {"simclr": Crash, "Crash": Crash}
    """,
    )
    report = check.run_checks(spec, protocol=str(tiny_protocol), out=tmp_path / "runs")
    rows = {r.check: r for r in report.rows}
    for key in ("metadata: version", "metadata: paper", "metadata: licence", "metadata: description"):
        assert rows[key].mark == "✗", key
    assert "__version__" in rows["metadata: version"].detail
    assert rows["names are new"].mark == "✗" and "method 'simclr'" in rows["names are new"].detail
    assert (
        rows["names are lowercase (a-z 0-9 - _ .)"].mark == "✗" and "Crash" in rows["names are lowercase (a-z 0-9 - _ .)"].detail
    )
    crashed = rows["runs: method Crash"]
    assert crashed.mark == "✗" and "boom in my method" in crashed.detail and "sloppy" in crashed.detail
    assert not report.passed and "SOME CHECKS FAILED" in report.markdown()


def test_observer_only_plugin_passes_without_runs(tmp_path):
    spec = _plugin(
        tmp_path,
        "steplog",
        """
        '''Logs every step's loss.'''
        from ssl_bench import hookimpl

        __version__, __license__, __paper__ = "1.0", "MIT", "none"

        @hookimpl
        def ssl_bench_step_end(step, loss):
            pass
    """,
    )
    report = check.run_checks(spec)
    assert report.passed and not report.runs
    assert {r.check: r.detail for r in report.rows}["provides something"] == "observer hooks only, nothing to run"


def test_unknown_protocol_is_a_user_error(tmp_path):
    assert (
        main(
            [
                "check",
                "--plugin",
                str(ROOT / "examples" / "my_method.py"),
                "--protocol",
                "nope",
                "--report",
                str(tmp_path / "r.md"),
            ]
        )
        == 2
    )
