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
    [path] = (tmp_path / "runs").rglob("*.h5")
    r = Result(path)
    assert r.attrs["method"] == "align-uniform"
    results.check(r)  # what the engine stores passes the leaderboard's checks: summary recomputed, content hash


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
