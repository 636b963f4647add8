"""Issue 31: nothing hangs, nothing crashes, nothing resumes into a different run.

Damaged result files (one flipped byte), hostile strings, edited manifests and recipes, rotten checkpoints,
and inputs that used to end in a traceback. Each test names the item of the issue it keeps.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import pytest

from ssl_bench import protocol as protocols
from ssl_bench.cli import main
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
