"""The result file: one HDF5 file per run, written atomically (:func:`write`), read back lazily (:class:`Result`).

Layout (schema version 1), the contract that tools and later versions rely on:

- root attributes: ``schema_version``, ``protocol``, ``protocol_version``, ``protocol_hash``,
  ``method``, ``stream``, ``strategy``, ``seed``, ``ssl_bench_version``, ``torch_version``,
  ``device``, ``git_commit``, ``created``, ``plugins`` (JSON: plugin -> version),
  ``content_hash`` (sha256 of everything else in the file, see :func:`content_hash`), ``images_processed``
  (training samples through the method), ``recipe_source``, ``run_identity`` (hash of the effective
  recipe, strategy and stream options, and the precision when it is not the protocol's), ``variant`` (true when
  anything was given on top of the defaults), ``seconds`` (the run's wall-clock seconds over all its processes),
  ``precision`` (``bf16`` or ``fp32``: the training step's), ``precision_tag`` (that precision when ``--precision``
  made it other than the protocol's on the device, the file name's ``__bf16``/``__fp32``; empty otherwise);
  what a bit-identical re-run needs: ``threads`` (torch's intra-op threads), ``ops_backend``
  (:func:`ssl_bench.ops.backend`), ``numpy_version``, ``h5py_version``, ``cuda_version`` and
  ``cudnn_version`` (empty without CUDA), ``plugin_hashes`` (JSON: plugin -> sha256 of its source);
- ``config``: the fully resolved run configuration, a UTF-8 JSON string;
- ``recipe``: the effective optimisation recipe (:mod:`ssl_bench.recipe`), JSON;
- ``protocol_json``: the validated protocol (every default filled in), canonical JSON;
- ``metrics/acc_matrix``: float [P, T], row i = after training phase i (one per experience
  for sequential strategies), column j = evaluated on experience j's held-out split;
  ``metrics/acc_init``: float [T], the same at random initialisation;
  ``metrics/<evaluator>/<key>``: everything each evaluator measured, first axis = phase;
  ``init/<evaluator>/<key>``: the same at initialisation; ``end/<evaluator>/<key>``: end-of-run evaluators;
- ``stream/``: per experience ``train_idx``, ``test_idx``, ``classes``, ``domains``, and the
  class and domain names; ``phases/``: names, experiences and steps of every phase;
- ``train/loss``: the loss after every step (float32); ``strategy/``: what the strategy recorded;
- ``cost/`` (files written since issue 34; older files have only ``seconds``): what the run cost
  (:mod:`ssl_bench.engine.cost`; read with :func:`ssl_bench.results.continual.cost_summary`), per phase [P]:
  ``train_seconds`` (wall-clock seconds of its training steps), ``train_cpu_seconds`` (the process's CPU seconds
  over them), ``train_images``, ``images_per_second``, ``train_flops`` (measured FLOPs of all its steps) and
  ``peak_memory_bytes`` (CPU: the process's peak RSS up to the phase's end; CUDA: max allocated in the phase);
  ``resolutions`` [R] (the S3L stages' sides), ``step_flops`` [P, R] (FLOPs of one training step, counted by
  ``torch.utils.flop_counter`` on the phase's first step at each resolution; NaN where not counted) and
  ``steps_at_resolution`` [P, R]; ``eval_seconds/<part>`` [P + 1] (row 0 at init, row i + 1 after phase i;
  ``<part>`` is ``features`` or an evaluator) and ``end_seconds/<evaluator>`` (the end-of-run evaluation,
  a per-phase evaluator's ``finish`` included). Every number covers the whole run across resumes;
- ``summary`` attributes: headline numbers derived from the arrays above by
  :func:`ssl_bench.results.continual.summarize`; ``summary_definitions`` attributes: what each one is.

Evaluator datasets (under ``metrics/`` per phase, first axis = phase; ``init/`` without it):
``linear/acc`` [T]; ``knn/acc`` (the first k), ``knn/acc_k<k>`` (the other k; knn 0.1.0 stored the first too) [T];
``fewshot/acc_<k>shot``, ``fewshot/ci95_<k>shot``; ``collapse/auc``, ``auc_sq``, ``rankme``, ``std_normalized``,
``spectrum`` [min(n, D)] (float32 singular values); ``cka/prev`` (not at init),
``cka/features`` [n, D] float16 and ``cka/index`` [n] (test indices of the fixed subset).
Under ``end/``: ``sharpness/{loss,top_eigenvalue,hessian_trace,eps_sharpness}``,
``downstream/<label>/acc``; files of cka 0.1.0 may hold ``cka/joint`` (CKA to a joint run's file that happened to
be in ``--out``; 0.2.0 stores none: ``report`` and ``plot`` compute it from both files).

Limits: a result file holds numbers, not data. No dataset may declare more than
:data:`MAX_DATASET_BYTES` (the largest real one, a 1.28M-image stream's ``train_idx``, is
10 MB), nor all of them together more than :data:`MAX_TOTAL_BYTES`; data must live in the
file itself (no external or virtual storage, no soft or external links). :class:`Result`
checks this from the file's metadata before reading anything, then reads each dataset only
when asked for it, so a small file that declares a huge unwritten dataset costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ssl_bench.errors import UserError
from ssl_bench.results import guard

SCHEMA_VERSION = 1
MAX_DATASET_BYTES = 64 * 2**20
MAX_TOTAL_BYTES = 256 * 2**20
HASH_ATTR = "content_hash"
#: arrays of at least this many bytes are stored gzip-compressed (:func:`write`)
COMPRESS_FROM = 4096
#: the attributes that say which run a file is; each must agree with the stored ``config``
IDENTITY = ("protocol", "protocol_version", "protocol_hash", "method", "stream", "strategy", "seed")
REQUIRED_ATTRS = (*IDENTITY, "ssl_bench_version", "torch_version", "device", "plugins")
#: stored and recomputed summary numbers must agree this closely (both are float64; only rounding differs)
TOLERANCE = 1e-9


def write(
    path: Path, attrs: dict[str, Any], arrays: dict[str, Any], group_attrs: dict[str, dict[str, Any]] | None = None
) -> Path:
    """Write a result file at ``path`` via a temporary file and an atomic rename.

    ``arrays`` maps slash-separated dataset paths to numpy arrays, numbers or strings. The
    file's :func:`content_hash` is computed from what was written and stored last. The file is
    built in memory and written with plain file I/O, so a full disk is an ``OSError`` (the
    temporary file removed), not a failure inside HDF5.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    buffer = io.BytesIO()  # built in memory: a full disk fails the plain write below, never inside HDF5
    with h5py.File(buffer, "w") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        for key, value in attrs.items():
            f.attrs[key] = _attr(value)
        for name, value in arrays.items():
            if isinstance(value, str):
                f.create_dataset(name, data=value, dtype=h5py.string_dtype("utf-8"))
            else:
                array = np.asarray(value)
                # larger arrays (stream indices, CKA features) gzip-compressed: result files are committed to the
                # repository (leaderboard/results), whose working tree must stay small enough to travel; the values,
                # and so the content hash, do not depend on how they are stored
                packed = {"compression": "gzip", "compression_opts": 6, "shuffle": True} if array.nbytes >= COMPRESS_FROM else {}
                f.create_dataset(name, data=array, **packed)
        for group, values in (group_attrs or {}).items():
            g = f.require_group(group)
            for key, value in values.items():
                g.attrs[key] = _attr(value)
        f.attrs[HASH_ATTR] = content_hash(f)
    try:
        with open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    guard.trust(path, buffer.getbuffer())
    return path


def _attr(value):
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if isinstance(value, (str, np.str_)):
        return str(value)  # numpy strings have no HDF5 type; Python strings become UTF-8
    if isinstance(value, np.generic):
        return value.item()
    return value


def content_hash(f: h5py.File) -> str:
    """sha256 over every attribute and dataset of an open file (paths in order), except this hash itself.

    Written by :func:`write`; :func:`check` recomputes it, so an edit made after the run with
    any tool that does not also recompute the hash is caught. It is not a signature.
    """
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name))
    digest = hashlib.sha256()
    for name in ["", *sorted(names)]:
        obj = f[name] if name else f
        for key in sorted(obj.attrs):
            if name or key != HASH_ATTR:
                _feed(digest, f"attr /{name}@{key}", obj.attrs[key])
        if isinstance(obj, h5py.Dataset):
            _feed(digest, f"data /{name}", obj[()])
    return digest.hexdigest()


def _feed(digest, tag: str, value) -> None:
    """Length-prefixed tag and content; a numeric array's buffer is hashed in place (no copy of a large one)."""
    tag_bytes = tag.encode()
    digest.update(len(tag_bytes).to_bytes(8, "little") + tag_bytes)
    arr = None if isinstance(value, (h5py.Empty, bytes, str)) else np.asarray(value)
    if arr is not None and arr.dtype.kind not in "OSUV":
        arr = np.ascontiguousarray(arr)
        head = b"n" + arr.dtype.str.encode() + repr(arr.shape).encode()
        digest.update((len(head) + arr.nbytes).to_bytes(8, "little") + head)
        digest.update(arr.reshape(-1).view(np.uint8))
    else:
        part = _canonical(value)
        digest.update(len(part).to_bytes(8, "little") + part)


def _canonical(value) -> bytes:
    """Bytes that depend on a value's content only (str and bytes alike: h5py returns either, by version)."""
    if isinstance(value, h5py.Empty):
        return b"e" + str(value.dtype).encode()
    if isinstance(value, (bytes, np.bytes_)):
        return b"s" + bytes(value)
    if isinstance(value, str):  # bytes that are not UTF-8 come back from h5py as lone surrogates: hashed as stored
        return b"s" + value.encode("utf-8", "surrogateescape")
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        parts = [_canonical(x) for x in arr.reshape(-1)]
        return b"a" + repr(arr.shape).encode() + b"".join(len(p).to_bytes(8, "little") + p for p in parts)
    return b"n" + arr.dtype.str.encode() + repr(arr.shape).encode() + np.ascontiguousarray(arr).tobytes()


def _declared_bytes(obj: h5py.Dataset) -> int:
    return int(math.prod(obj.shape or ())) * obj.dtype.itemsize


class Result:
    """A result file: attributes and config up front, every dataset read only when asked for.

    Opening checks the schema version and the layout limits (see the module docstring) from
    metadata alone, after a child process has read the whole file without crashing or hanging
    (:mod:`ssl_bench.results.guard`). ``r["metrics/acc_matrix"]``, ``r.get(name)`` and the ``r.arrays`` mapping
    read one dataset each; ``r.shapes`` gives every dataset's declared shape without reading.
    ``r.summary`` is recomputed from the arrays (:func:`ssl_bench.results.continual.summarize`);
    what the file stores is ``r.stored_summary``. Any problem is a :class:`UserError` naming the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.where = f"'{path}'"
        if not self.path.is_file():
            raise UserError(f"result file '{path}' does not exist")
        guard.require(self.path)  # read first by a child process: a file that crashes or hangs HDF5 is refused
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.group_attrs: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, Any] = {}
        with self._open() as f:
            self._guard(lambda: self._load(f))
        self.arrays = _Arrays(self)

    def _load(self, f: h5py.File) -> None:
        version = f.attrs.get("schema_version", -1)
        try:
            version = int(version) if np.ndim(version) == 0 else -1
        except (TypeError, ValueError):
            version = -1
        if version < 0:
            raise UserError(f"{self.where} has no schema_version: it is not an ssl-bench result file")
        if version > SCHEMA_VERSION:
            raise UserError(
                f"{self.where} has schema version {version}, newer than this ssl-bench reads ({SCHEMA_VERSION}); "
                "upgrade ssl-bench"
            )
        if version < SCHEMA_VERSION:
            raise UserError(
                f"{self.where} has schema version {version}, older than this ssl-bench reads ({SCHEMA_VERSION}); re-run it"
            )
        self._scan(f)
        self.attrs = {_decode(k): _decode(v) for k, v in f.attrs.items()}

    def _guard(self, action):
        """Run a read of the file; h5py's errors on a damaged file become one line naming it."""
        try:
            return action()
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever a damaged file makes h5py raise
            raise UserError(f"{self.where} is damaged or not a result file ({type(err).__name__}: {err})") from None

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except Exception as err:  # noqa: BLE001 - OSError mostly; a file that h5py cannot open at all
            raise UserError(f"{self.where} is not a readable HDF5 result file ({err})") from None

    def _scan(self, f: h5py.File) -> None:
        """Record every dataset's shape and the groups' attributes; refuse what breaks the limits (metadata only)."""
        total = 0

        def visit(name, obj):
            nonlocal total
            if isinstance(obj, h5py.Dataset):
                self._check_dataset(name, obj)
                total += _declared_bytes(obj)
                self.shapes[name] = tuple(obj.shape or ())
            else:
                self._check_links(obj)
                if obj.attrs:
                    self.group_attrs[name] = {_decode(k): _decode(v) for k, v in obj.attrs.items()}

        self._check_links(f)
        f.visititems(visit)
        if total > MAX_TOTAL_BYTES:
            raise UserError(
                f"{self.where} declares {total / 2**20:.0f} MiB of datasets, more than a result file may "
                f"({MAX_TOTAL_BYTES / 2**20:.0f} MiB): it is not an ssl-bench result file"
            )

    def _check_links(self, group: h5py.Group) -> None:
        for key in group:
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise UserError(
                    f"{self.where}: '{(group.name.rstrip('/') + '/' + key).lstrip('/')}' is a "
                    f"{type(link).__name__}; result files hold their data themselves"
                )

    def _check_dataset(self, name: str, obj: h5py.Dataset) -> None:
        size = _declared_bytes(obj)
        if size > MAX_DATASET_BYTES:
            raise UserError(
                f"{self.where}: dataset '{name}' declares shape {tuple(obj.shape)} ({size / 2**20:.0f} MiB), "
                f"more than a result file may hold ({MAX_DATASET_BYTES / 2**20:.0f} MiB per dataset)"
            )
        if obj.is_virtual or obj.external:
            raise UserError(
                f"{self.where}: dataset '{name}' keeps its data outside the file; result files hold their data themselves"
            )

    def _read(self, name: str):
        if name not in self._cache:
            if name not in self.shapes:
                raise KeyError(name)

            def read():
                with self._open() as f:
                    obj = f.get(name)
                    if not isinstance(obj, h5py.Dataset):
                        raise UserError(f"{self.where}: '{name}' is no longer a dataset (the file changed while open)")
                    self._check_dataset(name, obj)  # again: the file may have been replaced since it was opened
                    value = obj[()]
                    return value.decode() if isinstance(value, bytes) else value

            self._cache[name] = self._guard(read)
        return self._cache[name]

    def __getitem__(self, name: str):
        return self._read(name)

    def get(self, name: str, default=None):
        return self._read(name) if name in self.shapes else default

    def missing(self, attrs=(), arrays=()) -> list[str]:
        """The attributes and datasets of ``attrs`` and ``arrays`` that the file lacks."""
        return [a for a in attrs if a not in self.attrs] + [d for d in arrays if d not in self.shapes]

    def require(self, attrs=(), arrays=()) -> None:
        gone = self.missing(attrs, arrays)
        if gone:
            raise UserError(f"{self.where} lacks {', '.join(gone)}: it was not written by 'ssl-bench run', or was damaged")

    @cached_property
    def config(self) -> dict[str, Any]:
        text = self.get("config")
        if text is None:
            return {}
        try:
            config = json.loads(text)
        except (TypeError, ValueError):
            config = None
        if not isinstance(config, dict):
            raise UserError(f"{self.where}: its config dataset is not a JSON object")
        return config

    @property
    def stored_summary(self) -> dict[str, Any]:
        """The ``summary`` attributes as stored (trust :attr:`summary` instead)."""
        return self.group_attrs.get("summary", {})

    @cached_property
    def summary(self) -> dict[str, float]:
        """The headline numbers recomputed from the stored arrays (:func:`ssl_bench.results.continual.summarize`)."""
        from ssl_bench.results import continual

        self.require(arrays=["metrics/acc_matrix"])
        try:
            return continual.summarize(self.arrays)
        except UserError as err:
            raise UserError(f"{self.where}: {err}") from None
        except Exception as err:  # noqa: BLE001 - arrays of the wrong type or shape, from a damaged or edited file
            raise UserError(f"{self.where}: its arrays cannot be summarised ({type(err).__name__}: {err})") from None

    @property
    def acc_matrix(self) -> np.ndarray:
        return np.asarray(self["metrics/acc_matrix"])


class _Arrays(Mapping):
    """The datasets of a result file by path (``config`` excepted), read on first access."""

    def __init__(self, result: Result):
        self._result = result

    def __getitem__(self, name: str):
        if name == "config":
            raise KeyError(name)
        return self._result._read(name)

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._result.shapes if name != "config")

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, name) -> bool:
        return name != "config" and name in self._result.shapes


def _decode(value):
    if isinstance(value, bytes):  # a name or text that is not UTF-8 (a damaged file) is kept, escaped, as text
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, str) and not value.isascii():  # h5py keeps bytes that are not UTF-8 as lone surrogates
        try:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, np.generic):
        value = value.item()
    return value
