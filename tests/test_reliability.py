"""Issue 31: nothing hangs, nothing crashes, nothing resumes into a different run.

Damaged result files (one flipped byte), hostile strings, edited manifests and recipes, rotten checkpoints,
and inputs that used to end in a traceback. Each test names the item of the issue it keeps.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from ssl_bench import protocol as protocols
from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.errors import UserError
from ssl_bench.results import guard
from tests.test_leaderboard import make_result, rehash

SMOKE = protocols.load("smoke")


def cli(*args, prelude=""):
    """The real command in a subprocess (a segfault must not take pytest with it): (status, stdout, stderr)."""
    code = f"import sys\n{prelude}\nfrom ssl_bench.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def in_process(*args) -> tuple[int, str, str]:
    """``ssl-bench ARGS`` in this process (safe for files the guard has read): (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, root.handlers = root.handlers, []  # the command's logging.basicConfig writes to this err
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        root.handlers = handlers
    return code, out.getvalue(), err.getvalue()


def one_error_line(stderr: str) -> str:
    """The one error line of a command that failed cleanly (warnings logged before it aside)."""
    lines = [line for line in stderr.strip().splitlines() if line.startswith("ssl-bench: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr and stderr.strip().endswith(lines[0]), stderr
    return lines[0]


@contextlib.contextmanager
def within(seconds: int):
    """Fail (instead of hanging) when the block takes longer than ``seconds``."""

    def expired(*_):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def flipped(path: Path, offset: int, name: str | None = None) -> Path:
    """A copy of ``path`` with the byte at ``offset`` XORed with 0xFF."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    out = path.with_name(name or f"flip{offset}.h5")
    out.write_bytes(bytes(data))
    return out


def first_string_length(path: Path) -> int:
    """The offset of the length of the file's first variable-length string (its root attribute ``protocol``): a
    4-byte length followed by the address of the global heap collection that holds the text."""
    data = path.read_bytes()
    heap = data.index(b"GCOL")
    return data.index(struct.pack("<Q", heap)) - 4


@pytest.fixture
def good(tmp_path):
    """simclr / instance / sequential, seed 0, under the shipped smoke protocol (written as the engine writes)."""
    return make_result(tmp_path / "runs", "simclr", "instance", "sequential", 0)


# ------------------------------------------------------------------ items 1-2: one guarded read for every reader
READERS = {  # command line (with {f}: the file, {d}: a folder holding it and a good file), exit status, output
    "show": (["show", "{f}"], 2),
    "plot": (["plot", "{f}", "--out", "{d}/plots"], 2),
    "verify": (["verify", "{f}"], 2),
    "submit": (["submit", "--check", "{f}"], 2),
    "leaderboard": (["leaderboard", "--results", "{d}", "--strict"], 1),
    "export": (["export", "{d}"], 0),
    "report": (["report", "{d}"], 0),
}


def _run_reader(command, bad, good):
    folder = bad.parent / "folder"
    (folder / "good").mkdir(parents=True)
    shutil.copy(bad, folder / bad.name)
    shutil.copy(good, folder / "good" / good.name)
    argv, want = READERS[command]
    code, out, err = cli(*(a.format(f=bad, d=folder) for a in argv))
    return code, out, err, want


@pytest.mark.parametrize("command", sorted(READERS))
def test_every_reader_refuses_a_file_that_crashes_the_hdf5_library_with_one_line(command, good, tmp_path):
    """Byte 921 of a result file, flipped, makes HDF5 2.0 segfault: show, plot, report and verify died with it."""
    bad = flipped(good, 921)
    code, out, err, want = _run_reader(command, bad, good)
    assert code == want, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if bad.name in line]
    assert len(lines) == 1 and "kills the process that reads it" in lines[0], err


def test_a_file_that_makes_hdf5_allocate_gigabytes_is_refused_without_taking_them(good, tmp_path):
    """Byte 3 of a string's length, flipped (the issue's byte 977, byte 955 of this file): HDF5 allocated and
    filled 4 GiB to read it, for many seconds; the child that reads it first is stopped at 1 GiB."""
    bad = flipped(good, first_string_length(good) + 3)
    peak = textwrap.dedent("""
        import atexit
        atexit.register(lambda: print("peak", next(line for line in open("/proc/self/status")
                                                    if line.startswith("VmHWM:")).split()[1], file=sys.stderr))
    """)
    code, out, err = cli("show", bad, prelude=peak)
    *lines, last = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert f"'{bad}'" in lines[0] and "memory" in lines[0]
    assert int(last.split()[1]) < 500 * 1024, f"show took {int(last.split()[1]) // 1024} MB"  # 4 GB before


def test_a_file_that_hangs_the_reader_is_refused_after_the_time_limit(good, tmp_path, monkeypatch):
    """A hang is simulated in the child (the probe sleeps on one file); the files after it are still read."""
    hang = tmp_path / "hang.h5"
    shutil.copy(good, hang)
    other = flipped(good, 921)
    sleeping = guard._PROBE.replace(
        "    r = attempt(lambda: results.Result(path))",
        "    if path.endswith('hang.h5'):\n        import time; time.sleep(600)\n    r = attempt(lambda: results.Result(path))",
    )
    assert sleeping != guard._PROBE
    monkeypatch.setattr(guard, "_PROBE", sleeping)
    monkeypatch.setattr(guard, "_verdicts", {})
    with within(60):
        found = guard.crashing([hang, good, other], timeout=2)
    assert set(found) == {hang, other}
    assert "hangs the process that reads it (no answer in 2 s" in found[hang] and "kills" in found[other]


def test_verdicts_are_remembered_per_content(good, tmp_path, monkeypatch):
    """One child per batch of new files; a file read before is not read again unless its bytes changed."""
    starts = []
    real = subprocess.Popen
    monkeypatch.setattr(guard.subprocess, "Popen", lambda *a, **k: starts.append(1) or real(*a, **k))
    monkeypatch.setattr(guard, "_verdicts", {})
    files = [flipped(good, 100, "a.h5"), flipped(good, 200, "b.h5"), flipped(good, 921, "c.h5"), flipped(good, 300, "d.h5")]
    assert set(guard.crashing(files)) == {files[2]} and len(starts) == 2  # restarted once, after the bad file
    assert set(guard.crashing(files)) == {files[2]} and len(starts) == 2
    files[0].write_bytes(flipped(good, 921, "e.h5").read_bytes())
    assert set(guard.crashing(files)) == {files[0], files[2]} and len(starts) == 3


# ------------------------------------------------------------------ item 3: report reads as the leaderboard does
@pytest.fixture
def seeds(tmp_path):
    """simclr / instance, sequential and joint, every seed of the smoke protocol."""
    folder = tmp_path / "board"
    return [make_result(folder, "simclr", "instance", s, seed) for s in ("sequential", "joint") for seed in SMOKE.seeds]


def _runs_table(report: str) -> list[str]:
    return report.split("## Runs", 1)[1].strip().splitlines()[2:]


def test_report_skips_a_file_whose_numbers_were_edited(seeds):
    with h5py.File(seeds[0], "r+") as f:  # sequential seed 0: its accuracies raised, the content hash left as it was
        f["metrics/acc_matrix"][...] = 0.9
    code, out, err = in_process("report", seeds[0].parents[0])
    assert code == 0 and f"skipped a bad result file: '{seeds[0]}'" in err
    sequential = next(row for row in _runs_table(out) if "| sequential |" in row)
    assert "| 1, 2 |" in sequential  # seed 0 is not used (it was, with its edited matrix, before)


def test_report_escapes_every_string_from_a_file(seeds):
    with h5py.File(seeds[0], "r+") as f:
        f.attrs["device"] = "<script>alert(2)</script> | x\n## injected heading"
    rehash(seeds[0])  # a consistent file: it passes every check
    code, out, err = in_process("report", seeds[0].parent)
    assert code == 0 and err.count("skipped") == 0
    assert "<script>" not in out and "\n## injected" not in out
    assert "&lt;script&gt;alert(2)&lt;/script&gt; \\| x ## injected heading" in out


def test_report_skips_a_second_file_of_a_run_with_a_warning(seeds):
    copy = seeds[0].parent / "zz" / seeds[0].name  # after the original in path order
    copy.parent.mkdir()
    shutil.copy(seeds[0], copy)
    code, out, err = in_process("report", seeds[0].parent)
    assert code == 0 and f"'{copy}' is the same run" in err  # exit 2 before
    assert any("| sequential | 0, 1, 2 |" in row for row in _runs_table(out))


# ------------------------------------------------------------------ item 4: show prints no terminal escapes
def test_show_escapes_control_characters_from_a_file(good):
    hostile = "\x1b[31mred\x1b]0;title\x07\r\u202eevil"
    with h5py.File(good, "r+") as f:
        f.attrs["device"] = hostile
        f.attrs["git_commit"] = "abc\x1b[2J"
        f["phases/names"][0] = b"exp\x1b[1A 0"
    rehash(good)  # the file passes every check
    code, out, err = in_process("show", good)
    assert code == 0 and err == ""
    assert not any(c in out for c in "\x1b\x07\r\u202e")
    assert "\\x1b[31mred\\x1b]0;title\\x07\\r\\u202eevil" in out and "abc\\x1b[2J" in out and "exp\\x1b[1A 0" in out


# ------------------------------------------------------------------ items 5-6: nothing resumes into a different run
CRASH = textwrap.dedent("""
    import os
    from ssl_bench import hookimpl

    @hookimpl
    def ssl_bench_phase_start(run, phase):
        if os.environ.get("CRASH_AT") == phase.name:
            raise RuntimeError("simulated crash")
""")


def interrupt(args: list, monkeypatch) -> Path:
    """Run ``ssl-bench ARGS`` (with the crash plugin among them) until its second phase; its checkpoint."""
    monkeypatch.setenv("CRASH_AT", "experience 1")
    code, _, err = in_process(*args)
    monkeypatch.delenv("CRASH_AT")
    assert code == 1 and "simulated crash" in err, err
    out = Path(args[args.index("--out") + 1])
    [ckpt] = out.glob(".*.ckpt")
    return ckpt


@pytest.fixture
def tiny_run(tiny_protocol, tmp_path):
    """``ssl-bench run`` of the tiny protocol with a plugin that can stop it before a phase."""
    plugin = tmp_path / "crash_plugin.py"
    plugin.write_text(CRASH)
    return ["-q", "run", "--plugin", plugin, "--protocol", tiny_protocol, "--out", tmp_path / "runs"]


def test_a_checkpoint_whose_weights_rotted_is_refused_with_one_line_naming_restart(tiny_run, monkeypatch):
    """One float of a conv weight with its exponent's top bit flipped (x 2^128 or / 2^128): it resumed before."""
    from ssl_bench.engine import checkpoint

    ckpt = interrupt(tiny_run, monkeypatch)
    state = checkpoint.unpack(checkpoint.read(ckpt))
    weight = next(v for k, v in state["method"].items() if "conv" in k and v.ndim == 4 and v.dtype.is_floating_point)
    data = bytearray(ckpt.read_bytes())
    at = data.index(weight.numpy().tobytes()) + 4 * 5 + 3  # the fifth float's sign-and-exponent byte
    data[at] ^= 0x40
    ckpt.write_bytes(bytes(data))
    code, out, err = in_process(*tiny_run)
    assert code == 2 and out == "", err
    line = one_error_line(err)
    assert line.startswith("ssl-bench: error: ") and f"'{ckpt}'" in line and "checksum" in line and "--restart" in line
    code, out, err = in_process(*tiny_run, "--restart")
    assert code == 0 and not ckpt.exists()


def test_a_checkpoint_written_before_the_checksum_is_never_unpickled(tiny_run, monkeypatch, tmp_path):
    """A torch.save zip without the header (ssl-bench before 0.2, or a planted pickle): the run starts over."""
    import torch

    from ssl_bench.engine import checkpoint

    ckpt = interrupt(tiny_run, monkeypatch)
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("MARKER", str(marker))
    torch.save({"fingerprint": "x", "payload": Evil()}, ckpt)
    assert checkpoint.legacy(ckpt)
    code, out, err = in_process(*tiny_run)
    assert code == 0 and "written by an older ssl-bench (no checksum); starting over" in err and not marker.exists()


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MARKER']}",))


# ------------------------------------------------------------------ item 8: every bad input is one line and exit 2
def test_a_device_torch_does_not_know_is_one_line(tiny_run):
    code, out, err = in_process(*tiny_run, "--device", "gpu")
    assert code == 2 and "--device 'gpu' is not a device: give auto, cpu, cuda or cuda:N" in one_error_line(err)  # exit 1


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("epochs_per_experience = 1", "epochs_per_experience = inf", "'train.epochs_per_experience': Input should be less"),
        ("epochs_per_experience = 1", "epochs_per_experience = 1e9", "'train.epochs_per_experience': Input should be less"),
        ("seeds = [0, 1]", "seeds = [-1]", "'seeds.0': Input should be greater than or equal to 0"),
        ("seeds = [0, 1]", "seeds = [0, 99999999999]", "'seeds.1': Input should be less than 4294967296"),
        ("resolution = 16", "resolution = 100000", "'dataset.resolution': Input should be less than or equal to 1024"),
        ("resolution = 16", "resolution = 1", "'dataset.resolution': Input should be greater than or equal to 8"),
    ],
)
def test_a_protocol_out_of_range_names_its_key(old, new, message):
    from tests.conftest import TINY

    assert old in TINY
    with pytest.raises(UserError, match=re.escape(message)):
        protocols.parse(TINY.replace(old, new), "tiny.toml")


@pytest.mark.parametrize("width", [-1.0, 0.0, float("nan"), 1e6, True])
def test_a_resnet_width_out_of_range_is_refused(width):
    from ssl_bench_plugins.backbones.resnet import resnet18

    with pytest.raises(UserError, match=r"resnet: width must be a number in \(0, 16\]"):
        resnet18(width=width)  # -1.0 became 8 channels


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_sweep_needs_one_job_at_least(jobs, tiny_protocol, tmp_path):
    code, out, err = in_process("-q", "sweep", "--protocol", tiny_protocol, "--out", tmp_path, "--jobs", jobs, "--dry-run")
    assert code == 2 and f"--jobs is how many runs go at the same time: give 1 or more, got {jobs}" in one_error_line(err)


def test_a_strategy_named_twice_is_one_line(tiny_run):
    code, out, err = in_process(*tiny_run, "--strategy", "replay+replay")
    assert code == 2 and "names replay twice" in one_error_line(err)


MANIFESTS = {  # manifest text -> the one line it gives (each raised a Python error, or was taken, before)
    '{"experiences": [{"classes": [["circle"]]}]}': "'classes' must list names (strings), got ['circle']",
    '{"experiences": [{"train": [1000000000000000000000000000000], "test": [0]}]}': "'train' index out of range 0..159",
    '{"experiences": [{"train": [true, false], "test": [0]}]}': "'train' must list sample ids (strings) or indices",
    '{"experiences": [{"train": [0, 1, 0], "test": [0]}]}': "'train' lists 0 twice",
    '{"experiences": [{"train": ["train/star3/photo/0", "train/star3/photo/0"], "test": [0]}]}': "lists 'train/star3/photo/0'",
    '{"experiences": [{"classes": ["circle", "circle"]}]}': "'classes' lists 'circle' twice",
    '{"version": "1", "experiences": [{"classes": ["circle"]}]}': "\"version\" must be the integer 1, got '1'",
    '{"experiences": [{"classes": ["circle"], "x": ' + "[" * 100_000 + "]" * 100_000 + "}]}": "nests lists or tables too deeply",
}


@pytest.fixture(scope="module")
def shapes():
    """20 classes, 4 domains, 8 px: 160 training and 80 held-out images (sample ids train/<class>/<domain>/<i>)."""
    from ssl_bench_plugins.datasets.synthetic import synthetic

    return synthetic(resolution=8, seed=0, train_per_class_domain=2, test_per_class_domain=1, n_domains=4)


@pytest.mark.parametrize("text", MANIFESTS, ids=range(len(MANIFESTS)))
def test_a_bad_manifest_is_one_line(text, shapes, tmp_path):
    from ssl_bench_plugins.streams.manifest import manifest_stream

    path = tmp_path / "split.json"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(MANIFESTS[text])):
        manifest_stream(shapes, n_experiences=1, seed=0, path=str(path))


def test_a_manifest_too_large_is_refused_before_it_is_parsed(shapes, tmp_path, monkeypatch):
    """170 MB of indices took 2.3 GB to parse; the limit is checked on the file's size."""
    from ssl_bench.blocks import splits

    monkeypatch.setattr(splits, "MAX_BYTES", 1000)
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"experiences": [{"train": list(range(160)) * 3, "test": [0]}]}))
    with pytest.raises(UserError, match=r"split.json is 0 MiB, more than a manifest may be \(0 MiB; 1.28M sample ids"):
        splits.read(path)


def test_a_text_file_as_checkpoint_is_not_called_code(tmp_path):
    from ssl_bench.engine import checkpoint

    path = tmp_path / ".x.h5.ckpt"
    path.write_text("hello\n")
    with pytest.raises(UserError, match=r"damaged or not an ssl-bench checkpoint \(no checkpoint header\); rerun with --restart"):
        checkpoint.read(path)  # "it holds more than data, refused without running it" before


def _limited(size: int):
    """A file-size limit for a child process (ulimit -f); Python ignores SIGXFSZ, so a write fails with EFBIG."""

    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def _run_limited(args, size):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ssl_bench.cli", *map(str, args)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, preexec_fn=_limited(size), timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_a_file_size_limit_at_the_first_checkpoint_says_none_was_kept(tiny_protocol, tmp_path):
    code, out, err = _run_limited(["-q", "run", "--protocol", tiny_protocol, "--out", tmp_path / "runs"], 20_000)
    line = one_error_line(err)
    assert code == 2 and "no checkpoint was written yet" in line and "previous checkpoint is kept" not in line
    assert not list((tmp_path / "runs").glob(".*.tmp")) and not list((tmp_path / "runs").glob(".*.lock"))


def test_a_file_size_limit_of_zero_is_one_line_before_any_plugin_loads(tiny_protocol, tmp_path):
    code, out, err = _run_limited(["-q", "run", "--protocol", tiny_protocol, "--out", tmp_path / "runs"], 0)
    assert code == 2 and err.count("\n") == 1, err  # "plugin 'resnet' is broken" and an unknown backbone before
    assert "a file-size limit stops every write" in one_error_line(err)


# ------------------------------------------------------------------ item 10: a data folder cannot run code
def test_a_cifar_folder_with_a_planted_pickle_runs_no_code(tmp_path, monkeypatch):
    import pickle

    from ssl_bench_plugins.datasets.cifar import cifar10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3], "batch_label": b"x"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    assert len(cifar10(tmp_path).train) == 20  # numpy arrays, lists, strings and bytes: what CIFAR holds
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("MARKER", str(marker))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": Evil()}))
    with pytest.raises(UserError, match=r"batches.meta: it names posix.system, which CIFAR's files never hold"):
        cifar10(tmp_path)
    assert not marker.exists()  # torchvision's loader, and this one before, ran the command


# ------------------------------------------------------------------ item 11: SIGTERM leaves no lock behind
SLOW = textwrap.dedent("""
    import time
    from ssl_bench import hookimpl

    @hookimpl
    def ssl_bench_phase_start(run, phase):
        time.sleep(600)
""")


def test_sigterm_removes_the_lock_and_says_how_to_resume(tiny_protocol, tmp_path):
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW)
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "ssl_bench.cli", "-q", "run", "--plugin", plugin, "--protocol", tiny_protocol, "--out", out]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with within(120):
        while not list(out.glob(".*.lock")):
            time.sleep(0.1)
        time.sleep(1.0)  # inside the phase's sleep
        proc.terminate()
        _, err = proc.communicate()
    assert proc.returncode == 130 and "interrupted; run the same command again to resume" in err
    assert not list(out.glob(".*.lock")) and not list(out.glob(".*.tmp"))


# ------------------------------------------------------------------ what the fuzz test found
def test_text_that_is_not_utf8_is_shown_escaped_not_a_traceback(good, tmp_path):
    """A device attribute and a phase name with a byte that is not UTF-8 (h5py hands the first back with a lone
    surrogate): show and plot ended with exit 1 and a UnicodeError."""
    with h5py.File(good, "r+") as f:
        f.attrs.create("device", b"cpu\xff x", dtype=h5py.string_dtype("utf-8"))
        f["phases/names"][0] = b"exp\xff 0"
    rehash(good)
    code, out, err = in_process("show", good)
    assert code == 0 and err == "" and "cpu\\xff x" in out and "exp\\xff 0" in out
    code, out, err = in_process("plot", good, "--out", tmp_path / "plots")
    assert code == 0 and "Traceback" not in err


def test_plot_leaves_out_cka_when_a_file_has_features_but_no_index(tmp_path):
    from tests.test_plot import fake_result

    path = fake_result(tmp_path / "a.h5", evaluators=("cka",))
    with h5py.File(path, "r+") as f:
        del f["metrics/cka/index"]
    rehash(path)  # a consistent file no engine writes: it passes the checks
    code, out, err = in_process("plot", path, "--out", tmp_path / "plots")
    assert code == 0 and "no cka plot" in err and not (tmp_path / "plots" / "cka.png").exists()  # KeyError before


def test_a_manifest_edited_between_two_runs_is_another_run_not_a_resume(tiny_run, monkeypatch, tmp_path):
    """Split A, killed after phase 1, then split B (A's experiences reversed) at the same path: it resumed and stored
    B's split with A's rows and losses. The manifest's content is in the fingerprint and the identity now."""
    split = tmp_path / "split.json"
    protocol = tiny_run[tiny_run.index("--protocol") + 1]
    assert in_process("-q", "stream-export", "--protocol", protocol, "--stream", "class", "-o", split)[0] == 0
    a = json.loads(split.read_text())
    run = [*tiny_run, "--stream", "manifest", "--stream-opt", f"path={split}"]
    ckpt_a = interrupt(run, monkeypatch)
    b = dict(a, experiences=a["experiences"][::-1])
    split.write_text(json.dumps(b))
    code, out, err = in_process(*run)
    assert code == 0 and "resuming" not in err, err
    path = Path(out.strip())
    assert f".{path.name}.ckpt" != ckpt_a.name and ckpt_a.exists()  # another run; A's checkpoint left as it was
    r = results.Result(path)
    assert set(r.config["inputs"]) == {"stream.path"}  # the manifest's sha256, stored with the run
    names = [n.decode() for n in r["stream/class_names"]]
    first = [names[c] for c in r["stream/experience_0/classes"]]
    assert sorted(first) == sorted(b["experiences"][0]["classes"]) != sorted(a["experiences"][0]["classes"])


def test_the_checkpoint_fingerprint_and_identity_follow_a_manifest_s_content(tiny_protocol, tmp_path):
    from ssl_bench.engine import checkpoint
    from ssl_bench.plan import RunConfig, make_plan
    from ssl_bench.registry import Registry

    split = tmp_path / "split.json"
    assert in_process("-q", "stream-export", "--protocol", tiny_protocol, "--stream", "class", "-o", split)[0] == 0

    def planned():
        proto = protocols.load(str(tiny_protocol))
        config = RunConfig(proto, "simclr", "manifest", "sequential", 0, tmp_path, stream_options={"path": str(split)})
        make_plan(config, Registry.discover())
        return checkpoint.fingerprint(config), config.identity, config.result_path

    before = planned()
    data = json.loads(split.read_text())
    split.write_text(json.dumps(dict(data, experiences=data["experiences"][::-1])))
    after = planned()
    assert all(x != y for x, y in zip(before, after))  # all three equal before: only the path was hashed
    split.write_text(json.dumps(data, indent=4))  # the same split written differently: another file, another run
    assert planned()[1] not in (before[1], after[1])


# ------------------------------------------------------------------ item 7: one run, one identity, one name
def planned(strategy="sequential", **chosen):
    """The smoke protocol's simclr / instance run with ``chosen`` options, planned (no data loaded)."""
    from ssl_bench.plan import RunConfig, make_plan
    from ssl_bench.registry import Registry

    config = RunConfig(SMOKE, "simclr", "instance", strategy, 0, Path("runs"), device="cpu", **chosen)
    make_plan(config, Registry.discover())
    return config


def test_options_equal_to_the_defaults_are_the_default_run():
    default = planned()
    same = planned(recipe_overrides={"lr": 0.1})  # SimCLR's smoke recipe has lr 0.1
    assert not same.variant and same.result_path == default.result_path  # a __v<its own identity> file before
    assert planned(method_options={"temperature": 0.5}).result_path == default.result_path  # the factory's default
    assert planned("replay", strategy_options={"size": 500}).result_path == planned("replay").result_path
    assert planned("replay", strategy_options={"replay.size": 500.0}).result_path == planned("replay").result_path


def test_numbers_are_compared_by_value():
    one = planned(method_options={"temperature": 1})
    assert one.variant and one.identity == planned(method_options={"temperature": 1.0}).identity  # two before
    assert one.identity == planned(recipe_overrides={"options": {"temperature": 1}}).identity
    size = planned("replay", strategy_options={"size": 400})
    assert size.identity == planned("replay", strategy_options={"size": 400.0}).identity
    assert size.identity == planned("replay", strategy_options={"replay.size": 400}).identity
    assert planned(recipe_overrides={"lr": 1}).identity == planned(recipe_overrides={"lr": 1.0}).identity


def test_method_opt_wins_over_recipe_options_also_when_it_sets_the_default():
    config = planned(recipe_overrides={"options": {"temperature": 0.2}}, method_options={"temperature": 0.5})
    assert config.recipe["options"].get("temperature", 0.5) == 0.5 and not config.variant


def test_bf16_on_the_cpu_is_not_the_fp32_run():
    assert planned(precision="bf16").result_path != planned().result_path == planned(precision="fp32").result_path


def test_every_submitted_file_has_the_identity_and_name_its_configuration_gives_today():
    """Canonical identities leave every run as it was: the identity, the variant mark and the name that the stored
    configuration gives now are the file's (the repository's own files, read with h5py: attributes and config)."""
    from ssl_bench.plan import make_plan
    from ssl_bench.registry import Registry
    from ssl_bench.results import reproduce

    registry = Registry.discover()
    files = sorted((Path(__file__).resolve().parents[1] / "leaderboard" / "results").rglob("*.h5"))
    assert len(files) > 90
    for path in files:
        with h5py.File(path, "r") as f:
            attrs, c, stored = dict(f.attrs), json.loads(f["config"][()]), json.loads(f["protocol_json"][()])
        config = reproduce.stored_config(protocols.Protocol.model_validate(stored), c, Path("runs"))  # as verify's
        make_plan(config, registry)
        assert config.identity == attrs["run_identity"] and config.variant == bool(attrs.get("variant")), path
        assert config.result_path.name == path.name


def test_verify_does_not_re_run_a_manifest_that_changed_since(tiny_run, tmp_path):
    split = tmp_path / "split.json"
    protocol = tiny_run[tiny_run.index("--protocol") + 1]
    assert in_process("-q", "stream-export", "--protocol", protocol, "--stream", "class", "-o", split)[0] == 0
    code, out, err = in_process(*tiny_run, "--stream", "manifest", "--stream-opt", f"path={split}")
    assert code == 0, err
    data = json.loads(split.read_text())
    split.write_text(json.dumps(dict(data, experiences=data["experiences"][::-1])))
    code, _, err = in_process("-q", "verify", out.strip(), "--any-protocol")
    assert code == 2 and "stream.path name is not what the run read" in one_error_line(err)  # re-ran split B before
