"""Result files: one HDF5 file per run, written atomically, read back with a schema check.

Layout (schema version 1), the contract that tools and later versions rely on:

- root attributes: ``schema_version``, ``protocol``, ``protocol_version``, ``protocol_hash``,
  ``method``, ``stream``, ``strategy``, ``seed``, ``ssl_bench_version``, ``torch_version``,
  ``device``, ``git_commit``, ``created``, ``plugins`` (JSON: plugin -> version);
- ``config``: the fully resolved run configuration, a UTF-8 JSON string;
- ``protocol_json``: the validated protocol (every default filled in), canonical JSON;
- ``metrics/acc_matrix``: float [P, T], row i = after training phase i (one per experience
  for sequential strategies), column j = evaluated on experience j's held-out split;
  ``metrics/acc_init``: float [T], the same at random initialisation;
  ``metrics/<evaluator>/<key>``: everything each evaluator measured, first axis = phase;
  ``init/<evaluator>/<key>``: the same at initialisation; ``end/<evaluator>/<key>``: end-of-run evaluators;
- ``stream/``: per experience ``train_idx``, ``test_idx``, ``classes``, ``domains``, and the
  class and domain names; ``phases/``: names, experiences and steps of every phase;
- ``train/loss``: the loss after every step; ``strategy/``: what the strategy recorded;
- ``summary`` attributes: headline numbers derived from the arrays above by
  :func:`ssl_bench.continual.summarize`; ``summary_definitions`` attributes: what each one is.

Evaluator datasets (under ``metrics/`` per phase, first axis = phase; ``init/`` without it):
``linear/acc`` [T]; ``knn/acc``, ``knn/acc_k<k>`` [T]; ``fewshot/acc_<k>shot``,
``fewshot/ci95_<k>shot``; ``collapse/auc``, ``auc_sq``, ``rankme``, ``std_normalized``,
``spectrum`` [min(n, D)] (float32 singular values); ``cka/prev`` (not at init),
``cka/features`` [n, D] float16 and ``cka/index`` [n] (test indices of the fixed subset).
Under ``end/``: ``sharpness/{loss,top_eigenvalue,hessian_trace,eps_sharpness}``,
``downstream/<label>/acc``, ``cka/joint`` (when the joint run's file was in ``--out``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ssl_bench.errors import UserError

SCHEMA_VERSION = 1


def write(
    path: Path, attrs: dict[str, Any], arrays: dict[str, Any], group_attrs: dict[str, dict[str, Any]] | None = None
) -> Path:
    """Write a result file at ``path`` via a temporary file and an atomic rename.

    ``arrays`` maps slash-separated dataset paths to numpy arrays, numbers or strings.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            for key, value in attrs.items():
                f.attrs[key] = _attr(value)
            for name, value in arrays.items():
                if isinstance(value, str):
                    f.create_dataset(name, data=value, dtype=h5py.string_dtype("utf-8"))
                else:
                    f.create_dataset(name, data=np.asarray(value))
            for group, values in (group_attrs or {}).items():
                g = f.require_group(group)
                for key, value in values.items():
                    g.attrs[key] = _attr(value)
            f.flush()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
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


class Result:
    """A result file read into memory (they are small): attributes, config and arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"result file '{path}' does not exist")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise UserError(f"'{path}' is not a readable HDF5 result file ({err})") from None
        with f:
            version = int(f.attrs.get("schema_version", -1))
            if version < 0:
                raise UserError(f"'{path}' has no schema_version: it is not an ssl-bench result file")
            if version > SCHEMA_VERSION:
                raise UserError(
                    f"'{path}' has schema version {version}, newer than this ssl-bench reads ({SCHEMA_VERSION}); "
                    "upgrade ssl-bench"
                )
            if version < SCHEMA_VERSION:
                raise UserError(
                    f"'{path}' has schema version {version}, older than this ssl-bench reads ({SCHEMA_VERSION}); re-run it"
                )
            self.attrs = {k: _decode(v) for k, v in f.attrs.items()}
            self.arrays: dict[str, Any] = {}
            self.group_attrs: dict[str, dict[str, Any]] = {}
            f.visititems(self._visit)
        self.config = json.loads(self.arrays.pop("config", "{}"))

    def _visit(self, name, obj):
        if isinstance(obj, h5py.Dataset):
            value = obj[()]
            self.arrays[name] = value.decode() if isinstance(value, bytes) else value
        elif obj.attrs:
            self.group_attrs[name] = {k: _decode(v) for k, v in obj.attrs.items()}

    def __getitem__(self, name: str):
        return self.arrays[name]

    def get(self, name: str, default=None):
        return self.arrays.get(name, default)

    @property
    def summary(self) -> dict[str, Any]:
        return self.group_attrs.get("summary", {})

    @property
    def acc_matrix(self) -> np.ndarray:
        return np.asarray(self.arrays["metrics/acc_matrix"])


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    return value


def result_name(protocol_label: str, method: str, stream: str, strategy: str, seed: int) -> str:
    """The file name of a run: the same run always gets the same name (so a crashed run can resume)."""
    safe = lambda s: "".join(c if c.isalnum() or c in "-_.+" else "_" for c in s)  # noqa: E731
    return f"{safe(protocol_label)}__{safe(method)}__{safe(stream)}__{safe(strategy)}__s{seed}.h5"
