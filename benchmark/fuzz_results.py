"""Fuzz every reader of result files, and the checkpoint reader: one byte flipped at a time (issue 31).

    python benchmark/fuzz_results.py                  # every offset of the result file, 5000 of the checkpoint
    python benchmark/fuzz_results.py --offsets 300    # a seeded sample of 300 offsets (see NAMED, structural)

The result file is written the way the engine writes one (``tests/test_leaderboard.make_result``: the smoke
protocol, simclr / instance / sequential, seed 0, with a stream's indices and CKA features, the latter stored
gzip-compressed; about 25 KB). Each copy with one byte XORed with 0xFF goes
through every reader, in this process, through ``ssl_bench.cli.main``: ``show``, ``submit --check``, ``plot`` and
``verify`` on the copy; ``leaderboard --strict``, ``export`` and ``report`` on a folder of all the copies. That is
safe because of the guarded read (:mod:`ssl_bench.results.guard`): no copy reaches the HDF5 library here before a
child process has read it whole. Every command must end within :data:`LIMIT` seconds with exit 0, 1 (``leaderboard
--strict`` only) or 2, print at most one error line and no traceback.

What is not repeated per copy: a copy that passes ``results.check`` holds the original's content (its content hash
says so; about half the copies, whose flipped byte is padding or free space), so once it is read (by the guard's
child, by ``show``, by the folder commands) what a command does with it is what it does with the original:
``verify``, ``submit --check`` (which then loads every plugin) and ``plot`` (which then draws) run on the first
such copy only. Every other copy goes through every command whole. ``verify``'s re-run is replaced by its skip
(no CPU family): what is fuzzed is its reading and checks, not training.

The checkpoint is one the engine writes (:func:`ssl_bench.engine.checkpoint.write` of a ResNet-18 x0.125 state, its
SGD state and numpy arrays); each flipped copy must be refused by :func:`ssl_bench.engine.checkpoint.read` with one
line naming ``--restart`` (its checksum is checked before anything is unpickled).

``tests/test_fuzz.py`` runs 200 offsets of each in CI. Every sample holds bytes 921 and 977 (the issue's) and the
two bytes that are what those were in the issue's file (:func:`structural`): one makes HDF5 2.0 segfault, the other
makes it allocate 4 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAMED = (921, 977)  #: the offsets of the issue's smoke file that segfaulted or hung the readers, in every sample
LIMIT = 30  #: seconds a command may take on one copy (or on the folder of all copies)


def result_file(folder: Path) -> Path:
    """The result file that is fuzzed (see the module docstring), with two arrays large enough to be stored
    gzip-compressed as the engine stores them (a stream's indices, CKA features)."""
    sys.path.insert(0, str(ROOT))
    from ssl_bench import results
    from tests.test_leaderboard import make_result

    path = make_result(folder, "simclr", "instance", "sequential", 0)
    r = results.Result(path)
    arrays = {name: r[name] for name in r.shapes}
    rng = np.random.default_rng(0)
    arrays["stream/0/train_idx"] = np.sort(rng.choice(1600, 800, replace=False)).astype(np.int64)
    arrays["metrics/cka/features"] = rng.normal(size=(4, 32, 16)).astype(np.float16)
    arrays["metrics/cka/index"] = np.tile(np.arange(32), (4, 1))
    attrs = {k: v for k, v in r.attrs.items() if k not in ("schema_version", results.HASH_ATTR)}
    return results.write(path, attrs, arrays, r.group_attrs)


def structural(path: Path) -> tuple[int, int]:
    """The offsets in ``path`` of the issue's two bytes, found by what they are: 31 bytes before the length of the
    first variable-length string (inside its attribute's description; HDF5 2.0 segfaults), and byte 3 of that
    length (HDF5 allocates and fills 4 GiB). In the issue's file they were bytes 921 and 977."""
    import struct

    data = path.read_bytes()
    length = data.index(struct.pack("<Q", data.index(b"GCOL"))) - 4  # a string's length, then its heap's address
    return length - 31, length + 3


def checkpoint_file(folder: Path) -> Path:
    """A checkpoint as the engine writes one: model and optimiser state, numpy arrays, a random state."""
    import torch

    from ssl_bench.engine import checkpoint
    from ssl_bench_plugins.backbones.resnet import resnet18

    torch.manual_seed(0)
    model = resnet18(width=0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    optimizer.step()
    state = {
        "format": checkpoint.FORMAT,
        "fingerprint": "0" * 64,
        "next_phase": 1,
        "method": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "losses": [1.0, 0.5],
        "index": np.arange(100),
        "generator": np.random.default_rng(0).bit_generator.state,
    }
    path = folder / ".fuzz.h5.ckpt"
    checkpoint.write(checkpoint.pack(state), path, "")
    return path


def offsets(size: int, n: int | None, seed: int = 31, always: tuple[int, ...] = NAMED) -> list[int]:
    """``n`` offsets below ``size`` drawn with ``seed``, with ``always`` among them; every offset for None."""
    if n is None or n >= size:
        return list(range(size))
    named = [o for o in always if o < size]
    rest = np.random.default_rng(seed).choice(np.setdiff1d(np.arange(size), named), n - len(named), replace=False)
    return sorted(named + [int(o) for o in rest])


def flip(path: Path, offset: int, folder: Path) -> Path:
    """A copy of ``path`` in ``folder/<offset>/`` with the byte at ``offset`` XORed with 0xFF."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    out = folder / str(offset) / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(data))
    return out


@contextlib.contextmanager
def limit(seconds: int) -> Iterator[None]:
    def expired(*_):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def command(*args: object) -> tuple[int, str, str, float]:
    """``ssl-bench ARGS`` in this process: (status, stdout, stderr, seconds); a timeout or an escaping exception is
    reported as status -1 with its text on stderr."""
    from ssl_bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, root.handlers = root.handlers, []  # the command's logging.basicConfig writes to this err
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), limit(LIMIT):
            code = main([str(a) for a in args])
    except BaseException as exc:  # noqa: BLE001 - a hang, a traceback: what the fuzz is there to find
        code = -1
        err.write(f"{type(exc).__name__}: {exc}\n")
    finally:
        root.handlers = handlers
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start


def problem(name: str, code: int, err: str, allowed: tuple[int, ...], lines: int = 1) -> str | None:
    """What is wrong with a command's ending, None when it ended as it must."""
    errors = [line for line in err.splitlines() if line.startswith("ssl-bench: error")]
    if code not in allowed:
        return f"{name}: exit {code} (allowed {allowed}): {err.strip()[-300:]}"
    if "Traceback" in err or len(errors) > lines:
        return f"{name}: {len(errors)} error lines or a traceback: {err.strip()[-300:]}"
    return None


def fuzz_results(
    source: Path, chosen: list[int], work: Path, progress: bool = False
) -> tuple[list[str], dict[str, float], dict[str, int]]:
    """Run every reader on every flipped copy of ``source``: (problems, seconds per command, counts)."""
    from ssl_bench.results import reproduce

    families, reproduce.CPU_FAMILIES = reproduce.CPU_FAMILIES, ()  # verify's re-run replaced by its skip (docstring)
    try:
        return _fuzz_results(source, chosen, work, progress)
    finally:
        reproduce.CPU_FAMILIES = families


def _fuzz_results(
    source: Path, chosen: list[int], work: Path, progress: bool
) -> tuple[list[str], dict[str, float], dict[str, int]]:
    from ssl_bench import results
    from ssl_bench.errors import UserError

    folder = work / "copies"
    copies = {offset: flip(source, offset, folder) for offset in chosen}
    problems: list[str] = []
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}

    def record(name: str, outcome: tuple[int, str, str, float], allowed: tuple[int, ...], offset: int | str) -> None:
        code, _, err, took = outcome
        seconds[name] = seconds.get(name, 0.0) + took
        found = problem(f"{name} on byte {offset}", code, err, allowed, lines=1)
        if found:
            problems.append(found)

    t0 = time.perf_counter()
    crashed = results.crashing(list(copies.values()))  # one child process for them all (the readers ask again)
    seconds["guard (one child for all)"] = time.perf_counter() - t0
    for name, argv, allowed in (
        ("leaderboard --strict", ["leaderboard", "--results", folder, "--strict"], (1,)),
        ("export", ["export", folder], (0,)),
        ("report", ["report", folder], (0, 2)),
    ):
        code, out, err, took = command(*argv)
        seconds[name] = took
        skipped = [line for line in err.splitlines() if "skipped" in line]
        found = problem(f"{name} on the folder", code, err, allowed)
        if found:
            problems.append(found)
        elif len(skipped) > len(copies):
            problems.append(f"{name} on the folder: {len(skipped)} skip lines for {len(copies)} files")
    intact_done = False
    for i, (offset, path) in enumerate(copies.items()):
        if progress and i % 50 == 0:
            print(f"  byte {offset} ({i}/{len(copies)})", file=sys.stderr)
        record("show", command("show", path), (0, 2), offset)
        try:
            intact = path not in crashed and bool(results.check(results.Result(path)))
        except UserError:
            intact = False
        if not intact or not intact_done:  # an intact copy is the original once read: the others run on one
            record("verify", command("verify", path, "--skip-non-cpu"), (0, 2), offset)
            record("submit --check", command("submit", "--check", path), (0, 2), offset)
            record("plot", command("plot", path, "--out", work / "plots"), (0, 2), offset)
            intact_done = intact_done or intact
        else:
            counts["intact copies after the first"] = counts.get("intact copies after the first", 0) + 1
    counts["copies that crash or hang a reader"] = len(crashed)
    return problems, seconds, counts


def fuzz_checkpoint(source: Path, chosen: list[int], work: Path) -> list[str]:
    """Every flipped copy of the checkpoint ``source`` must be one line naming --restart."""
    from ssl_bench.engine import checkpoint
    from ssl_bench.errors import UserError

    problems = []
    data = source.read_bytes()
    work.mkdir(parents=True, exist_ok=True)
    path = work / source.name
    for offset in chosen:
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            with limit(LIMIT):
                checkpoint.read(path)
            problems.append(f"checkpoint byte {offset}: read without complaint")
        except UserError as err:
            if "\n" in str(err) or "--restart" not in str(err):
                problems.append(f"checkpoint byte {offset}: {str(err)[:300]}")
        except BaseException as err:  # noqa: BLE001 - anything else is what the fuzz is there to find
            problems.append(f"checkpoint byte {offset}: {type(err).__name__}: {str(err)[:300]}")
    return problems


def main() -> int:
    from ssl_bench.engine.checkpoint import HEADER

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--offsets", type=int, help="a seeded sample of this many offsets (default: every offset)")
    p.add_argument(
        "--checkpoint-offsets",
        type=int,
        default=5000,
        help="offsets of the checkpoint without --offsets: every byte of its header and a sample of the rest "
        "(default 5000; the sha256 covers every byte after the header alike)",
    )
    p.add_argument("--seed", type=int, default=31)
    p.add_argument("--work", type=Path, default=Path("fuzz-work"), help="folder for the copies (default: fuzz-work)")
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    source = result_file(args.work / "source")
    chosen = offsets(source.stat().st_size, args.offsets, args.seed, NAMED + structural(source))
    print(f"result file: {source.stat().st_size} bytes, {len(chosen)} offsets")
    problems, seconds, counts = fuzz_results(source, chosen, args.work / "results", progress=True)
    for name, s in seconds.items():
        print(f"  {name}: {s:.1f} s")
    for name, n in counts.items():
        print(f"  {name}: {n}")
    ckpt = checkpoint_file(args.work / "source")
    chosen = offsets(ckpt.stat().st_size, args.offsets or args.checkpoint_offsets, args.seed, tuple(range(HEADER)))
    print(f"checkpoint: {ckpt.stat().st_size} bytes, {len(chosen)} offsets")
    problems += fuzz_checkpoint(ckpt, chosen, args.work)
    for line in problems:
        print("PROBLEM", line)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
