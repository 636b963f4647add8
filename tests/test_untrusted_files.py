"""Result files as an attacker or an accident makes them: bloated, truncated, random, relabelled, edited.

``show``, ``leaderboard`` and ``submit`` must read them lazily and within limits, skip or refuse
them with one line naming the file, never trust a stored number, and escape every string.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from ssl_bench import protocol as protocols
from ssl_bench import results
from ssl_bench.errors import UserError
from ssl_bench.results import submission as submit
from ssl_bench.results import tables as leaderboard
from tests.conftest import run_cli
from tests.test_leaderboard import make_result, rehash

SMOKE = protocols.load("smoke")
GIB = 2**30


@pytest.fixture
def runs(tmp_path):
    """simclr / instance / sequential, every seed of the shipped smoke protocol."""
    return [make_result(tmp_path / "runs", "simclr", "instance", "sequential", seed) for seed in SMOKE.seeds]


# ---------------------------------------------------------------------- bloated files: lazy reading within limits
def bloat(path, name="metrics/knn/bloat", nbytes=GIB):
    """Declare a dataset of ``nbytes`` without writing it: the file stays small."""
    with h5py.File(path, "r+") as f:
        f.create_dataset(name, shape=(nbytes // 8,), dtype="f8")
    return path


# Peak memory of the command's own process: VmHWM, the high-water mark of its resident set. (getrusage's
# ru_maxrss would not do here: Linux carries it across exec, so it starts at pytest's size.)
PEAK = textwrap.dedent("""
    import sys
    from ssl_bench.cli import main
    code = main(sys.argv[1:])
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(int(hwm.split()[1]) // 1024, file=sys.stderr)
    sys.exit(code)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="measures peak memory through /proc (Linux)")
@pytest.mark.parametrize("name", ["metrics/knn/bloat", "metrics/acc_matrix_x", "train/loss"])
def test_show_refuses_a_bloated_file_without_reading_it(runs, tmp_path, name):
    path = bloat(runs[0], name)
    assert path.stat().st_size < 2**20  # a small file declaring 1 GiB
    proc = subprocess.run([sys.executable, "-c", PEAK, "show", str(path)], capture_output=True, text=True)
    *lines, peak_mb = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(lines) == 1 and f"'{name}' declares shape" in lines[0] and path.name in lines[0]
    assert int(peak_mb) < 300, f"show used {peak_mb} MB on a file declaring 1 GiB"  # 1.1 GB before


def test_leaderboard_and_submit_refuse_a_bloated_file(runs, tmp_path):
    bloat(runs[1])
    skipped = []
    good = leaderboard.collect(tmp_path / "runs", skipped)
    assert [r.path for r in good] == [runs[0], runs[2]]
    assert [p for p, _ in skipped] == [runs[1]] and "declares shape" in skipped[0][1]
    with pytest.raises(UserError, match="declares shape"):
        submit.validate(runs[1])


def test_many_datasets_within_the_per_dataset_limit_are_refused_together(runs):
    for i in range(5):
        bloat(runs[0], f"junk/{i}", results.MAX_DATASET_BYTES)
    with pytest.raises(UserError, match="MiB of datasets, more than a result file may"):
        results.Result(runs[0])


def test_datasets_are_read_only_when_asked_for(runs):
    r = results.Result(runs[0])
    assert r._cache == {} and r.shapes["metrics/acc_matrix"] == (4, 4)
    assert r.acc_matrix.shape == (4, 4) and set(r._cache) == {"metrics/acc_matrix"}
    assert "metrics/acc_init" in r.arrays and "config" not in r.arrays and set(r._cache) == {"metrics/acc_matrix"}


def test_data_outside_the_file_is_refused(runs, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"x" * 64)
    with h5py.File(runs[0], "r+") as f:
        f.create_dataset("metrics/outside", shape=(64,), dtype="u1", external=[(str(secret), 0, 64)])
    with pytest.raises(UserError, match="keeps its data outside the file"):
        results.Result(runs[0])
    with h5py.File(runs[1], "r+") as f:
        f["metrics/elsewhere"] = h5py.ExternalLink(str(runs[2]), "/metrics/acc_matrix")
    with pytest.raises(UserError, match="'metrics/elsewhere' is a ExternalLink"):
        results.Result(runs[1])


# ---------------------------------------------------------------------- the leaderboard survives bad files
def crashing_file(folder):
    """A result file with one byte changed that makes HDF5 2.0 segfault (found by flipping random bytes)."""
    path = make_result(folder, "moco", "class", "sequential", 0)
    data = bytearray(path.read_bytes())
    data[1145] = 140
    path.write_bytes(bytes(data))
    return path


def _bad_files(folder, good):
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    (folder / "truncated.h5").write_bytes(data[: len(data) // 2])
    (folder / "random.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "empty.h5").write_bytes(b"")
    with h5py.File(folder / "foreign.h5", "w") as f:  # HDF5, but not a result file
        f["x"] = 1
    newer = make_result(folder / "n", "moco", "instance", "sequential", 0)
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = results.SCHEMA_VERSION + 1
    lacking = make_result(folder / "l", "byol", "instance", "sequential", 0)
    with h5py.File(lacking, "r+") as f:
        del f.attrs["method"]
    no_matrix = make_result(folder / "m", "barlow", "instance", "sequential", 0)
    with h5py.File(no_matrix, "r+") as f:
        del f["metrics/acc_matrix"]
    short_init = make_result(folder / "i", "vicreg", "instance", "sequential", 0)
    with h5py.File(short_init, "r+") as f:
        del f["metrics/acc_init"]
        f["metrics/acc_init"] = [0.1, 0.2]
    garbled = make_result(folder / "g", "simsiam", "instance", "sequential", 0)
    with h5py.File(garbled, "r+") as f:
        del f["phases/experiences"]
        f["phases/experiences"] = "[[0], [1], [2], [99]"
    crashing = crashing_file(folder / "c")
    return {
        "truncated.h5": "",
        "random.h5": "not a readable HDF5",
        "empty.h5": "not a readable HDF5",
        short_init.name: "metrics/acc_init must be 4 accuracies",
        crashing.name: "",
        garbled.name: "its arrays cannot be summarised",
        "foreign.h5": "no schema_version",
        newer.name: "newer than this ssl-bench reads",
        lacking.name: "lacks method",
        no_matrix.name: "lacks metrics/acc_matrix",
    }


def test_leaderboard_skips_each_bad_file_with_one_warning_and_renders_the_rest(runs, tmp_path):
    folder = tmp_path / "runs"
    expected = _bad_files(folder / "bad", runs[0])
    code, out, err = run_cli("leaderboard", "--results", folder)
    assert code == 0, err
    [row] = [line for line in out.splitlines() if line.startswith("| simclr |")]  # smoke: not ranked
    assert row.startswith("| simclr | sequential |") and row.endswith("| 3 |")  # the three good seeds
    lines = err.strip().splitlines()
    assert len(lines) == len(expected) and "Traceback" not in err
    for name, why in expected.items():
        [line] = [x for x in lines if f"{name}'" in x]
        assert line.startswith("ssl-bench: skipped a bad result file:") and why in line
    code, out_strict, err_strict = run_cli("leaderboard", "--results", folder, "--strict")
    assert code == 1 and out_strict == out and f"{len(expected)} bad result file(s) skipped" in err_strict


def test_submit_names_a_file_that_crashes_the_hdf5_library(runs, tmp_path):
    bad = crashing_file(tmp_path / "c")
    code, out, err = run_cli("submit", *runs, bad, "--to", tmp_path / "board")
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"'{bad}'" in err  # "kills the process" on HDF5 2.0
    assert not (tmp_path / "board").exists()


def test_a_second_file_of_the_same_run_is_skipped_not_fatal(runs, tmp_path):
    copy = tmp_path / "runs" / "zz" / runs[0].name
    copy.parent.mkdir()
    copy.write_bytes(runs[0].read_bytes())
    skipped = []
    assert len(leaderboard.collect(tmp_path / "runs", skipped)) == 3
    assert [p for p, _ in skipped] == [copy] and "same run" in skipped[0][1]


# ---------------------------------------------------------------------- numbers: recomputed, never trusted
def _edit_summary(path, key, value):
    with h5py.File(path, "r+") as f:
        f["summary"].attrs[key] = value


def test_leaderboard_never_shows_an_edited_summary(runs, tmp_path):
    _edit_summary(runs[0], "final_avg_acc", 0.99)
    code, out, err = run_cli("leaderboard", "--results", tmp_path / "runs")
    assert code == 0 and "99.0" not in out and "summary key 'final_avg_acc' is 0.99" in err and runs[0].name in err
    rehash(runs[0])  # even with the content hash recomputed
    skipped = []
    good = leaderboard.collect(tmp_path / "runs", skipped)
    assert [p for p, _ in skipped] == [runs[0]] and "summary key 'final_avg_acc' is 0.99" in skipped[0][1]
    # and a table built from the file anyway shows what its arrays give, not the stored number
    [table] = leaderboard.build([results.Result(p) for p in runs])
    [row] = table["rows"]
    finals = [results.Result(p).acc_matrix[-1].mean() for p in runs]
    assert row["metrics"]["final_avg_acc"]["mean"] == pytest.approx(np.mean(finals))
    assert "99.0" not in leaderboard.markdown([table]) and len(good) == 2


def test_summary_is_recomputed_in_one_place(runs, monkeypatch):
    """leaderboard and submit both get their numbers from continual.summarize, through Result.summary."""
    from ssl_bench.results import continual

    calls = []
    real = continual.summarize
    monkeypatch.setattr(continual, "summarize", lambda arrays: calls.append(1) or real(arrays))
    leaderboard.build(leaderboard.collect(runs[0].parent))
    assert len(calls) == len(runs)
    submit.validate(runs[0])
    assert len(calls) == len(runs) + 1


# ---------------------------------------------------------------------- identity and content hash
def test_relabelled_method_is_rejected_even_with_a_recomputed_hash(runs, tmp_path):
    with h5py.File(runs[0], "r+") as f:
        f.attrs["method"] = "byol"
    message = r"its method attribute 'byol' differs from the run's stored configuration \('simclr'\)"
    with pytest.raises(UserError, match=message):
        submit.submit(runs, to=tmp_path / "board")
    assert not (tmp_path / "board").exists()  # nothing filed under byol/ (nor simclr/)
    rehash(runs[0])
    with pytest.raises(UserError, match=message):
        submit.validate(runs[0])
    skipped = []
    leaderboard.collect(tmp_path / "runs", skipped)
    assert [p for p, _ in skipped] == [runs[0]]


@pytest.mark.parametrize("key, value", [("stream", "class"), ("strategy", "joint"), ("seed", 5), ("protocol_version", 3)])
def test_every_identity_attribute_is_checked_against_the_config(runs, key, value):
    with h5py.File(runs[0], "r+") as f:
        f.attrs[key] = value
    rehash(runs[0])
    with pytest.raises(UserError, match=f"its {key} attribute .* differs from the run's stored configuration"):
        results.check(results.Result(runs[0]))


def test_relabelling_config_and_attribute_together_is_caught_by_the_hash(runs):
    with h5py.File(runs[0], "r+") as f:
        config = json.loads(f["config"][()])
        config["method"] = "byol"
        del f["config"]
        f.create_dataset("config", data=json.dumps(config), dtype=h5py.string_dtype("utf-8"))
        f.attrs["method"] = "byol"
    with pytest.raises(UserError, match="do not match its content_hash: the file was edited after the run"):
        submit.validate(runs[0])


def test_edited_arrays_with_a_consistent_summary_are_caught_by_the_hash_but_a_full_forgery_passes(runs):
    with h5py.File(runs[0], "r+") as f:
        f["metrics/acc_matrix"][-1, :] = 0.95
        r_arrays = {k: f[k][()] for k in ("metrics/acc_matrix", "metrics/acc_init", "phases/experiences")}
    from ssl_bench.results import continual

    for key, value in continual.summarize(r_arrays).items():
        _edit_summary(runs[0], key, value)
    with pytest.raises(UserError, match="content_hash"):
        submit.validate(runs[0])
    rehash(runs[0])  # what CONTRIBUTING says: a consistent forgery is not detectable without re-running
    assert submit.validate(runs[0]).summary["final_avg_acc"] == pytest.approx(0.95)


def test_engine_style_files_carry_a_hash_that_check_accepts(runs):
    r = results.Result(runs[0])
    assert len(r.attrs[results.HASH_ATTR]) == 64
    assert results.check(r) == r.summary


def test_a_file_without_a_hash_is_refused(runs):
    with h5py.File(runs[0], "r+") as f:
        del f.attrs[results.HASH_ATTR]
    with pytest.raises(UserError, match="has no content_hash: it was written by an older ssl-bench"):
        submit.validate(runs[0])


# ---------------------------------------------------------------------- escaping in every format
EVIL = "x</script><script>alert(1)</script>|*_`[a](b)"


def _evil_tables(tmp_path):
    """Tables from a file whose names no registry would accept (build does not check; collect would skip it)."""
    path = make_result(tmp_path / "evil", EVIL, "=cmd|' /C calc'!A0", "-sequential\n# heading", 0)
    return leaderboard.build([results.Result(path)]), path


def test_collect_skips_files_with_names_no_plugin_could_register(tmp_path):
    _, path = _evil_tables(tmp_path)
    skipped = []
    assert leaderboard.collect(path.parent, skipped) == [] and "is not a valid name" in skipped[0][1]


def test_markdown_escapes_names(tmp_path):
    tables, _ = _evil_tables(tmp_path)
    md = leaderboard.markdown(tables)
    assert "<script" not in md and "</script" not in md and "&lt;script&gt;" in md
    row = next(line for line in md.splitlines() if "alert" in line)
    assert row.count("|") - row.count("\\|") == 14  # the table's own separators only (13 columns)
    assert "\n# heading" not in md and "\\[a\\](b)" in md


def test_html_page_escapes_names(tmp_path):
    tables, _ = _evil_tables(tmp_path)
    page = leaderboard.html(tables)
    data = page.split('<script id="leaderboard-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data and "&" not in data
    assert json.loads(data)["tables"][0]["rows"][0]["method"] == EVIL  # the page shows the name as text


def test_csv_cannot_carry_a_formula(tmp_path):
    tables, _ = _evil_tables(tmp_path)
    [row] = [r for r in csv.DictReader(io.StringIO(leaderboard.to_csv(tables))) if r["method"] != "random init"]
    assert row["stream"].startswith("'=") and row["strategy"].startswith("'-") and "\n" not in row["strategy"]
    assert row["method"] == EVIL


def test_json_round_trips_names_as_data(tmp_path):
    tables, _ = _evil_tables(tmp_path)
    doc = json.loads(leaderboard.to_json(tables))
    assert doc["tables"][0]["rows"][0]["stream"] == "=cmd|' /C calc'!A0"


# ---------------------------------------------------------------------- show: one line, or quiet in a closed pipe
def test_show_on_a_file_missing_attributes_prints_one_line_and_nothing_else(runs):
    with h5py.File(runs[0], "r+") as f:
        del f.attrs["torch_version"]
    code, out, err = run_cli("show", runs[0])
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"ssl-bench: error: '{runs[0]}' lacks torch_version: it was not written by 'ssl-bench run', or was damaged"
    ]


def test_show_warns_about_an_edited_file_and_shows_recomputed_numbers(runs):
    _edit_summary(runs[0], "final_avg_acc", 0.99)
    code, out, err = run_cli("show", runs[0])
    assert code == 0 and "would be refused by submit" in err and "final_avg_acc" in err
    shown = float(next(line for line in out.splitlines() if line.strip().startswith("final_avg_acc")).split()[1])
    assert shown == pytest.approx(results.Result(runs[0]).acc_matrix[-1].mean(), abs=1e-4)


@pytest.mark.parametrize("command", ["show", "leaderboard"])
def test_output_into_a_closed_pipe_ends_quietly(runs, command):
    """`ssl-bench show F | head`: the reader is gone before ssl-bench writes; exit 0, nothing on stderr."""
    args = [runs[0]] if command == "show" else ["--results", runs[0].parent]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssl_bench.cli", command, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    proc.stdout.close()  # like `head` that has read what it wanted and exited
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and err == ""


def test_show_piped_into_head(runs):
    proc = subprocess.run(
        f"set -o pipefail; {sys.executable} -m ssl_bench.cli show {runs[0]} | head -n 1",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == str(runs[0]) and proc.stderr == ""


@pytest.mark.skipif(not shutil.which("node"), reason="needs node to parse the page's data as the browser does")
def test_html_page_data_parses_back_to_the_names_in_javascript(tmp_path):
    tables, _ = _evil_tables(tmp_path)
    page = tmp_path / "index.html"
    page.write_text(leaderboard.html(tables), encoding="utf-8")
    script = (
        "const t = require('fs').readFileSync(process.argv[1], 'utf8');"
        "const d = t.split('<script id=\"leaderboard-data\" type=\"application/json\">')[1].split('</script>')[0];"
        "process.stdout.write(JSON.parse(d).tables[0].rows[0].method);"
    )
    out = subprocess.run(["node", "-e", script, str(page)], capture_output=True, text=True, check=True).stdout
    assert out == EVIL
