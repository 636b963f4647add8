"""Checkpoint and resume: after every phase the run's state is saved, so an interrupted run continues identically.

The checkpoint (``.<result file name>.ckpt`` next to the result, written atomically) holds the
method, optimiser and strategy state, the step, the losses and metrics so far, the features
of the last phase and the random states (the CPU's, the run's generator and, on a GPU, its default
generator), and what the run cost so far (:mod:`ssl_bench.engine.cost`, so that a resumed run's costs and
``seconds`` cover all its processes). It is used only by a run of the same configuration
(:func:`fingerprint`), and removed once the result is written.

A checkpoint is data, never code: it is read with ``torch.load(weights_only=True)``, which
refuses anything but tensors, numbers, strings and containers of them. What state dicts hold
beyond that (numpy arrays and scalars, :class:`~ssl_bench.api.Features`) is stored in tagged
forms of those (:func:`pack`, :func:`unpack`); anything else is refused when saving, naming
where it is. The fingerprint is checked before anything of the run is touched, and a
checkpoint that cannot be read is one line naming it and suggesting ``--restart``.

A checkpoint is checksummed: the file is one header line, ``ssl-bench checkpoint sha256 <hex>``, then what
``torch.save`` wrote; the sha256 of that payload is checked before any of it is unpickled, so a bit that rotted
on disk (a float's exponent flipped) or an edit is one line naming the file and ``--restart``, never a resume
into other weights. A checkpoint without the header (``torch.save``'s zip, written by ssl-bench before the
checksum) is not read at all: the run starts over, as for another checkpoint format.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ssl_bench.api import Features
from ssl_bench.errors import UserError
from ssl_bench.plan import RunConfig

if TYPE_CHECKING:
    from ssl_bench.engine.build import Run

log = logging.getLogger(__name__)

#: version of the checkpoint layout; another version is not resumed (the run starts over)
FORMAT = 2
#: the first line of a checkpoint file, followed by the sha256 (hex) of the rest and a newline
MAGIC = b"ssl-bench checkpoint sha256 "
HEADER = len(MAGIC) + 64 + 1
#: how ``torch.save``'s zip starts: a checkpoint written before the checksum
_ZIP = b"PK\x03\x04"
TAG = "__ssl_bench__"
_FEATURES = ("train", "train_labels", "test", "test_labels")
_KEYS = ("fingerprint", "next_phase", "step", "images_processed", "losses", "metrics", "init_metrics")


def path_for(config: RunConfig) -> Path:
    """Where the run of ``config`` keeps its checkpoint."""
    return config.out / f".{config.result_path.name}.ckpt"


def fingerprint(config: RunConfig) -> str:
    """A hash of the configuration: a checkpoint is resumed only by the run that wrote it.

    ``out`` is left out (the checkpoint lives there anyway, however the folder is spelled), and the
    paths of ``data_root`` and of ``--plugin`` files are resolved, so ``./x`` and ``/abs/x`` agree.
    """
    d = config.to_json()
    del d["out"]
    if d.get("data_root"):
        d["data_root"] = str(Path(d["data_root"]).expanduser().resolve())
    d["plugins"] = [str(Path(p).resolve()) if Path(p).is_file() else p for p in d.get("plugins") or []]
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def pack(obj: Any, where: str = "state") -> Any:
    """``obj`` in the forms ``torch.load(weights_only=True)`` reads; :func:`unpack` undoes it."""
    if isinstance(obj, np.ndarray | np.generic):
        if obj.dtype.hasobject:
            raise TypeError(f"checkpoint: {where} is a numpy array of Python objects, which a checkpoint cannot hold")
        flat = np.ascontiguousarray(obj).reshape(-1)
        data = torch.from_numpy(flat.view(np.uint8).copy())
        kind = "scalar" if isinstance(obj, np.generic) else "ndarray"
        return {TAG: kind, "dtype": obj.dtype.str, "shape": list(obj.shape), "data": data}
    if obj is None or isinstance(obj, torch.Tensor | bool | int | float | str | torch.dtype | torch.Size):
        return obj
    if isinstance(obj, Features):
        return {TAG: "features", **{k: pack(getattr(obj, k), f"{where}.{k}") for k in _FEATURES}}
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            key = k.item() if isinstance(k, np.generic) else k
            out[key] = pack(v, f"{where}[{key!r}]")
        if hasattr(obj, "_metadata"):  # a module's state_dict: versions that load_state_dict reads
            out._metadata = obj._metadata  # type: ignore[union-attr]
        return out
    if isinstance(obj, list | tuple):
        items = [pack(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, set | frozenset):
        return pack(sorted(obj), where)
    raise TypeError(
        f"checkpoint: {where} is a {type(obj).__name__}; a state_dict may hold tensors, numpy arrays, numbers, "
        "strings, and lists, tuples and dicts of them"
    )


def unpack(obj: Any) -> Any:
    """The state :func:`pack` was given (sets come back as sorted lists)."""
    if isinstance(obj, dict):
        kind = obj.get(TAG)
        if kind in ("ndarray", "scalar"):
            arr = np.frombuffer(obj["data"].numpy().tobytes(), dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
            return arr[()] if kind == "scalar" else arr
        if kind == "features":
            return Features(*(unpack(obj[k]) for k in _FEATURES))
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = unpack(v)
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata  # type: ignore[union-attr]
        return out
    if isinstance(obj, list):
        return [unpack(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(unpack(v) for v in obj)
    return obj


def save(run: Run, path: Path, fingerprint: str, next_phase: int, previous: Features) -> None:
    """Save the run's state after a phase (temporary file + rename; on failure the previous checkpoint stays)."""
    state = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "next_phase": next_phase,
        "step": run.step,
        "images_processed": run.images_processed,
        "losses": run.losses,
        "metrics": run.metrics,
        "init_metrics": run.init_metrics,
        "method": run.method.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "strategy": run.strategy.state_dict(),
        "previous": previous,
        "generator": run.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        # the GPU's default generator (MAE's masks, drop-path): without it a resumed run draws other numbers there
        "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "cost": run.cost.state_dict(),  # what the run cost so far (ssl_bench.engine.cost), its seconds up to now
    }
    kept = (
        "the previous checkpoint is kept; free some space and rerun the command to resume"
        if path.exists()
        else "no checkpoint was written yet; free some space and rerun the command (the run starts over)"
    )
    write(pack(state), path, kept)


def write(obj: Any, path: Path, kept: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically, after a header with the payload's sha256 (see the module
    docstring); a failed write removes its temporary file and is one line (a :class:`UserError` ending with ``kept``)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + b"0" * 64 + b"\n")  # the real checksum once the payload is written
            sink = _Sink(fh)
            try:
                torch.save(obj, sink)  # type: ignore[arg-type]
            except RuntimeError:  # torch's writer turns the OS error of a failed write into a RuntimeError
                if sink.error is not None:
                    raise sink.error from None
                raise
            fh.seek(0)
            fh.write(MAGIC + sink.digest.hexdigest().encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(write_error(err, path, kept)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_error(err: OSError, path: Path, kept: str) -> str:
    """One line for an OSError raised while writing ``path``: "no space left on device while writing …; ``kept``"."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"no space left on device while writing {path} ({err.strerror}); {kept}"
    return f"cannot write {path}: {err.strerror or err}; {kept}"


class _Sink:
    """A file for ``torch.save`` that hashes what it writes and remembers the OSError of a failed write."""

    def __init__(self, fh: Any):
        self.fh, self.error, self.digest = fh, None, hashlib.sha256()

    def write(self, data: Any) -> int:
        self.digest.update(data)
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


def read(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, its checksum checked, read as data only (``weights_only=True``, on the CPU),
    still packed."""
    restart = "rerun with --restart to start the run over"
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"cannot read checkpoint '{path}': {err.strerror or err}; {restart}") from None
    if not data.startswith(MAGIC) or len(data) < HEADER or data[HEADER - 1 : HEADER] != b"\n":
        why = "written by an older ssl-bench, without a checksum" if data.startswith(_ZIP) else "no checkpoint header"
        raise UserError(f"checkpoint '{path}' is damaged or not an ssl-bench checkpoint ({why}); {restart}")
    payload = memoryview(data)[HEADER:]
    if hashlib.sha256(payload).hexdigest().encode() != data[len(MAGIC) : HEADER - 1]:
        raise UserError(
            f"checkpoint '{path}' is damaged: its contents do not match the checksum written with it (a bit that "
            f"changed on disk, or an edit); {restart}"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever a damaged or hostile file makes the unpickler raise
        lines = [line for line in str(err).splitlines() if line.strip()]
        if lines and lines[0].startswith("Weights only load failed") and len(lines) > 1:  # code or objects, never run
            why = f"it holds more than data, refused without running it: {lines[1]}"
        else:
            why = f"{type(err).__name__}: {err}"
        raise UserError(
            f"checkpoint '{path}' is damaged or not an ssl-bench checkpoint ({_line(why)}); "
            "rerun with --restart to start the run over"
        ) from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint '{path}' is not an ssl-bench checkpoint; rerun with --restart to start the run over")
    return state


def _line(text: str) -> str:
    """The first line of ``text``, at most 200 characters."""
    return (text.strip().splitlines() or [""])[0][:200]


def resume(run: Run, path: Path, fingerprint: str) -> tuple[int, Features | None]:
    """Restore ``run`` from the checkpoint at ``path`` if it is this configuration's: (phase to start at, last features)."""
    if not path.exists():
        return 0, None
    if legacy(path):
        log.warning("ignoring checkpoint %s: it was written by an older ssl-bench (no checksum); starting over", path)
        return 0, None
    state = read(path)
    if state.get("fingerprint") != fingerprint or state.get("format") != FORMAT:
        log.warning("ignoring checkpoint %s: it belongs to a different configuration or ssl-bench version", path)
        return 0, None
    try:
        state = unpack(state)
        start_phase = _restore(run, state)
    except Exception as err:  # noqa: BLE001 - a checkpoint of this configuration that does not fit the run
        raise UserError(
            f"checkpoint '{path}' does not fit this run ({_line(f'{type(err).__name__}: {err}')}); "
            "rerun with --restart to start the run over"
        ) from None
    log.info("resuming from checkpoint after phase %d/%d", start_phase, len(run.phases))
    return start_phase, state["previous"]


def legacy(path: Path) -> bool:
    """Whether ``path`` is a checkpoint written before the checksum (``torch.save``'s zip, never read now)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(_ZIP)) == _ZIP
    except OSError:
        return False


def _restore(run: Run, state: dict[str, Any]) -> int:
    missing = [k for k in (*_KEYS, "method", "optimizer", "strategy", "previous", "generator", "torch_rng") if k not in state]
    if missing:
        raise KeyError(f"missing {', '.join(missing)}")
    run.method.load_state_dict(state["method"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.strategy.load_state_dict(state["strategy"])
    run.step, run.losses, run.images_processed = state["step"], state["losses"], state["images_processed"]
    run.metrics, run.init_metrics = state["metrics"], state["init_metrics"]
    run.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and run.device.type == "cuda":  # (absent from checkpoints before it was kept)
        torch.cuda.set_rng_state(state["cuda_rng"], run.device)
    if state.get("cost") is not None:  # (absent from checkpoints before costs were kept: those phases' costs stay NaN)
        run.cost.load_state_dict(state["cost"])
    return state["next_phase"]


def lock_path(config: RunConfig) -> Path:
    """The advisory lock file of the run of ``config`` (one per result name)."""
    return config.out / f".{config.result_path.name}.lock"


@contextmanager
def lock(config: RunConfig, wait: bool = False) -> Iterator[None]:
    """Hold the configuration's advisory lock (``fcntl.flock``) while the run runs.

    A second process of the same configuration on the same ``--out`` gets a one-line UserError
    naming the holder's pid, or, with ``wait``, blocks until the first is done (and then resumes
    its checkpoint or, if the result is there, runs again as asked). The lock file is removed by
    its holder, also when it is stopped by SIGTERM (turned into an interrupt while the lock is held, so the
    temporary files go too); a process that locked a file that was removed meanwhile tries again. A lock file
    left by a process killed outright (SIGKILL) is harmless: nobody holds its lock, and the next run takes it.
    """
    path = lock_path(config)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                if not wait:
                    raise UserError(
                        f"another process is running this configuration (pid {holder}) with --out {config.out}; "
                        "wait for it, or rerun with --wait"
                    ) from None
                log.info("waiting for the other process running this configuration (pid %s)", holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the holder removed the file we locked: lock the new one
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:  # a full disk, a file-size limit of 0
            raise UserError(write_error(err, path, "nothing was run; free some space and rerun")) from None
        clean_stale(config)
        with _sigterm_interrupts():
            yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM (``kill``, a scheduler's stop) raises KeyboardInterrupt as Ctrl-C does, so the
    lock file and temporary files are removed on the way out; only the main thread can set a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def clean_stale(config: RunConfig) -> None:
    """Remove the temporary files that earlier, killed processes of this configuration left (called under its lock,
    so none of them is being written)."""
    name = config.result_path.name
    for tmp in config.out.glob(f".{name}.*.tmp"):  # results: .NAME.PID.tmp; checkpoints: .NAME.ckpt.PID.tmp
        if tmp.is_file():
            log.info("removing %s, left by an interrupted run", tmp)
            tmp.unlink(missing_ok=True)
