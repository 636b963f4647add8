"""The one guarded read of result files: the HDF5 library never crashes or hangs the process that reads one.

A damaged or crafted HDF5 file can make the HDF5 library segfault or loop forever (one flipped byte of a
smoke result does either), which no Python code can catch. So before :class:`~ssl_bench.results.Result`
opens a file, the file is read in full (every attribute and dataset, its summary and
:func:`~ssl_bench.results.check`) by a child process, with :data:`READ_TIMEOUT` seconds per file and a
memory limit. A file that kills the child, makes it run out of time or of memory is refused with one line
naming it (:class:`~ssl_bench.errors.UserError`); the reader itself never touches it. The child reads a
batch of files (:func:`crashing`: what ``leaderboard``, ``export``, ``report`` and ``plot`` call first with
every file they will read) and is restarted after a bad one.

Verdicts are remembered for the life of the process, keyed by the file's path and the sha256 of its bytes,
so a file is probed once however often it is opened, and an edited file is probed again. Files this process
wrote itself (:func:`trust`, called by :func:`~ssl_bench.results.write`) are not probed.

Not covered: a file replaced between the probe and the read (the reader then reads bytes that were not
probed).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ssl_bench.errors import UserError

#: seconds the child may spend reading and checking one file before the file counts as one that hangs the reader
READ_TIMEOUT = 10.0
#: seconds the child may take to start (import h5py and ssl-bench) on a busy machine
START_TIMEOUT = 120.0
#: memory that reading one file may add to the child's (a result file holds at most 256 MiB of data): a file that
#: makes the HDF5 library take more (a flipped size field can make it allocate and fill gigabytes) is refused
MEMORY_LIMIT = 1 * 2**30
#: the child's address space is capped at what it holds after its imports plus this, so that a file that makes
#: the HDF5 library allocate without bound fails in the child before it takes the machine's memory
ADDRESS_CAP = 8 * 2**30
DAMAGED = "it is damaged or was crafted"

#: (resolved path, sha256 of the bytes) -> why the file is refused, or None when it reads safely
_verdicts: dict[tuple[str, str], str | None] = {}
#: False in the child process (it is the guard)
enabled = True

_PROBE = r"""
import json, os, sys
from ssl_bench.results import guard
guard.enabled = False
from ssl_bench import results
from ssl_bench.results import continual  # noqa: F401 - imported before the address space is capped
guard.cap_address_space()
print("ready", flush=True)
for i, path in enumerate(json.load(sys.stdin)):
    status, before = "ok", guard.peak_rss()
    def attempt(step):
        global status
        try:
            return step()
        except (MemoryError, RecursionError) as err:
            status = type(err).__name__
        except Exception:
            return None
    r = attempt(lambda: results.Result(path))
    if r is not None:
        for name in list(r.shapes):
            attempt(lambda: r.get(name))
        attempt(lambda: r.config)
        attempt(lambda: r.summary)
        attempt(lambda: results.check(r))
    grew = guard.peak_rss() - before
    if grew > guard.MEMORY_LIMIT:
        status = f"{grew // 2**20}-MiB"
    print(status, i, flush=True)
os._exit(0)
"""


def cap_address_space() -> None:
    """In the child: cap its address space at what it holds now plus :data:`ADDRESS_CAP` (where the OS allows)."""
    size = _status("VmSize")
    try:
        import resource

        if size:
            resource.setrlimit(resource.RLIMIT_AS, (size + ADDRESS_CAP, resource.RLIM_INFINITY))
    except (ImportError, OSError, ValueError):
        pass  # no limits here: the parent's watch of the child's memory and time still holds


def peak_rss() -> int:
    """This process's peak resident memory, in bytes."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _status(field: str, pid: int | str = "self") -> int:
    """A memory field of ``/proc/<pid>/status`` in bytes (0 where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":")), 0)
    except (OSError, ValueError):
        return 0


def _key(path: Path) -> tuple[str, str] | None:
    """The verdict key of the file at ``path``, None when it cannot be read (Result then says why)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return str(Path(path).resolve()), digest.hexdigest()
    except OSError:
        return None


def trust(path: Path, data: bytes | memoryview) -> None:
    """Remember that the file at ``path`` holding ``data`` was written by this process (no probe needed)."""
    _verdicts[(str(Path(path).resolve()), hashlib.sha256(data).hexdigest())] = None


def require(path: Path) -> None:
    """Return if the file at ``path`` reads safely; else a :class:`UserError` saying what it does to a reader."""
    if enabled:
        bad = crashing([path]).get(Path(path))
        if bad:
            raise UserError(bad)


def crashing(paths: Iterable[str | Path], timeout: float | None = None) -> dict[Path, str]:
    """The files among ``paths`` that kill, hang or exhaust the process reading them, with why (the others map to
    nothing). Files not probed before are read by one child process, restarted after each bad file."""
    files = [Path(p) for p in paths]
    keys = {p: _key(p) for p in files if p.is_file()}
    todo: list[Path] = []
    seen: set[tuple[str, str]] = set()
    for p, key in keys.items():
        if key is not None and key not in _verdicts and key not in seen:
            todo.append(p)
            seen.add(key)
    for p, why in _probe(todo, READ_TIMEOUT if timeout is None else timeout).items():
        _verdicts[keys[p]] = why  # type: ignore[index]
    return {p: why for p in files if (key := keys.get(p)) is not None and (why := _verdicts.get(key))}


def _probe(todo: list[Path], timeout: float) -> dict[Path, str | None]:
    """Read ``todo`` in a child process; each path's verdict."""
    out: dict[Path, str | None] = {}
    here = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    while todo:
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(
                [sys.executable, "-c", _PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=env
            )
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps([str(p) for p in todo]).encode())
                proc.stdin.close()
                lines = _Lines(proc.stdout.fileno())
                if lines.next(START_TIMEOUT) != "ready":
                    proc.kill()
                    proc.wait()
                    errors.seek(0)
                    tail = errors.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                    raise UserError(f"cannot start a process to read result files safely: {tail[0][:300]}")
                baseline = _status("VmRSS", proc.pid)
                grew = functools.partial(_grew, proc.pid, baseline)
                done = 0
                for path in todo:
                    line = lines.next(timeout, grew)
                    done += 1
                    if line is None or not line.endswith(f" {done - 1}"):
                        out[path] = _why(proc, path, lines, timeout)
                        break
                    status = line.split()[0]
                    out[path] = None if status == "ok" else _exhausts(path, status.replace("-", " "))
                todo = todo[done:]
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
    return out


def _grew(pid: int, baseline: int) -> bool:
    """Whether the child's resident memory grew by more than :data:`MEMORY_LIMIT` (Linux; elsewhere its own check
    of its peak after each file holds)."""
    return _status("VmRSS", pid) - baseline > MEMORY_LIMIT


def _exhausts(path: Path, what: str) -> str:
    return f"'{path}' makes the HDF5 library exhaust the process that reads it ({what}): {DAMAGED}"


def _why(proc: subprocess.Popen, path: Path, lines: _Lines, timeout: float) -> str:
    """Why the child stopped answering at ``path``: it died (a signal, an exit status), took too much memory, or
    ran out of time."""
    if not lines.eof:
        proc.kill()
        proc.wait()
        if lines.stopped:
            return _exhausts(path, f"more than {MEMORY_LIMIT // 2**20} MiB of memory")
        return f"'{path}' hangs the process that reads it (no answer in {timeout:g} s, in the HDF5 library): {DAMAGED}"
    try:
        code = proc.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    how = f"signal {-code}" if code < 0 else f"exit status {code}"
    return f"'{path}' kills the process that reads it ({how}, in the HDF5 library): {DAMAGED}"


class _Lines:
    """Lines from a pipe, each waited for at most a given time."""

    def __init__(self, fd: int):
        self.fd, self.buffer, self.eof, self.stopped = fd, b"", False, False

    def next(self, timeout: float, stop: Callable[[], bool] = lambda: False) -> str | None:
        """The next line; None at end of file, when none came within ``timeout`` seconds, or when ``stop()``
        (asked every 0.05 s while waiting) says to give up (:attr:`stopped`)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                return None
            if stop():
                self.stopped = True
                return None
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.05))
            if ready:
                chunk = os.read(self.fd, 65536)
                self.eof = not chunk
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip()
