"""``ssl-bench export``: every number of a folder of result files as one long table, for pandas and friends.

One row per run and measured value, with the run's identity in every row::

    file, protocol, protocol_version, protocol_hash, method, stream, strategy, seed, variant, run_identity,
    metric, when, phase, experience, value

``when`` is ``summary`` (the numbers of :func:`ssl_bench.results.continual.summarize`, recomputed from the
file, and what the run cost, :func:`ssl_bench.results.continual.cost_summary`: ``cost/total_minutes``,
``cost/eval_minutes_by/<part>``, ``cost/step_flops/<resolution>``, ...), ``init`` (at random initialisation;
``acc_matrix`` there is ``metrics/acc_init``), ``phase`` (after training phase ``phase``) or ``end`` (end-of-run
evaluators); ``experience`` is the column of a per-experience value (the accuracy matrix ``acc_matrix``,
``linear/acc``, ``knn/acc_k200``, ...), empty for one number per phase (``collapse/auc``). A run's ``cost/``
datasets are rows too: per phase (``cost/train_seconds``, ``cost/images_per_second``, ``cost/train_flops``,
``cost/peak_memory_bytes``, ...) and per evaluation (``cost/eval_seconds/<part>`` at ``init`` and every
``phase``, ``cost/end_seconds/<evaluator>`` at the ``end``). Arrays of other shapes (spectra, CKA features)
stay in the result files.
Only files that pass :func:`ssl_bench.results.check` are read (the others are skipped with a
warning, as by the leaderboard).

Formats: ``csv`` (``pandas.read_csv``), ``json`` (a list of row objects, ``pandas.read_json``) and
``parquet`` (``pandas.read_parquet``; needs pyarrow).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench.errors import UserError
from ssl_bench.results import Result, continual

FORMATS = ("csv", "json", "parquet")
RUN_COLUMNS = (
    "file",
    "protocol",
    "protocol_version",
    "protocol_hash",
    "method",
    "stream",
    "strategy",
    "seed",
    "variant",
    "run_identity",
)
COLUMNS = (*RUN_COLUMNS, "metric", "when", "phase", "experience", "value")


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def rows_of(r: Result) -> list[dict[str, Any]]:
    """The rows of one result file (see the module docstring)."""
    a = r.attrs
    run = {
        "file": str(r.path),
        "protocol": str(a["protocol"]),
        "protocol_version": int(a["protocol_version"]),
        "protocol_hash": str(a["protocol_hash"]),
        "method": str(a["method"]),
        "stream": str(a["stream"]),
        "strategy": str(a["strategy"]),
        "seed": int(a["seed"]),
        "variant": bool(a.get("variant", False)),
        "run_identity": str(a.get("run_identity", "")),
    }
    out: list[dict[str, Any]] = []

    def add(metric: str, when: str, phase: int | None, values: np.ndarray) -> None:
        if values.ndim == 0:
            out.append({**run, "metric": metric, "when": when, "phase": phase, "experience": None, "value": _number(values)})
        else:
            for j, v in enumerate(values):
                out.append({**run, "metric": metric, "when": when, "phase": phase, "experience": j, "value": _number(v)})

    for key, value in sorted(r.summary.items()):
        add(key, "summary", None, np.asarray(value))
    acc = r.acc_matrix
    n_phases, n_exp = acc.shape
    add("acc_matrix", "init", None, np.asarray(r.get("metrics/acc_init", np.zeros(0))))
    for name in sorted(r.shapes):
        group, _, metric = name.partition("/")
        shape = r.shapes[name]
        if name == "metrics/acc_init":
            continue  # the random-init row of the accuracy matrix, added above
        if group == "metrics" and shape in ((n_phases,), (n_phases, n_exp)):
            values = np.asarray(r[name])
            if values.dtype.kind in "fiub":
                for i in range(n_phases):
                    add(metric, "phase", i, values[i])
        elif group in ("init", "end") and shape in ((), (n_exp,)):
            values = np.asarray(r[name])
            if values.dtype.kind in "fiub":
                add(metric, group, None, values)
        elif group == "cost":
            _cost_rows(name, np.asarray(r[name]), n_phases, add)
    for key, value in continual.cost_summary(r).items():
        parts = value.items() if isinstance(value, dict) else [("", value)]
        for part, v in parts:
            if isinstance(v, int | float) and not isinstance(v, bool):
                add(f"cost/{key}" + (f"/{part}" if part != "" else ""), "summary", None, np.asarray(v))
    return out


def _cost_rows(name: str, values: np.ndarray, n_phases: int, add: Any) -> None:
    """Rows of a ``cost/`` dataset: per phase (``cost/train_seconds``, ...), per evaluation point (``cost/eval_seconds/
    <part>``: init, then after every phase) and at the end (``cost/end_seconds/<evaluator>``)."""
    if values.dtype.kind not in "fiu":
        return
    if name.startswith("cost/eval_seconds/") and values.shape == (n_phases + 1,):
        add(name, "init", None, values[0])
        for i in range(n_phases):
            add(name, "phase", i, values[i + 1])
    elif name.startswith("cost/end_seconds/") and values.shape == ():
        add(name, "end", None, values)
    elif values.shape == (n_phases,):
        for i in range(n_phases):
            add(name, "phase", i, values[i])


def rows(found: list[Result]) -> list[dict[str, Any]]:
    return [row for r in found for row in rows_of(r)]


def render(table: list[dict[str, Any]], fmt: str) -> str | bytes:
    """The rows as CSV or JSON text, or parquet bytes."""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in table)
        return buf.getvalue()
    if fmt == "json":
        return json.dumps(table, indent=0, ensure_ascii=False) + "\n"
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(
                "--format parquet needs pyarrow, which is not installed: pip install pyarrow (or ssl-bench[parquet]); "
                "csv and json need nothing"
            ) from None
        columns = {c: [row[c] for row in table] for c in COLUMNS}
        types = {"protocol_version": pa.int64(), "seed": pa.int64(), "phase": pa.int64(), "experience": pa.int64()}
        schema = pa.schema(
            [(c, types.get(c, pa.bool_() if c == "variant" else pa.float64() if c == "value" else pa.string())) for c in COLUMNS]
        )
        sink = io.BytesIO()
        pq.write_table(pa.table(columns, schema=schema), sink)
        return sink.getvalue()
    raise UserError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")


def format_for(path: Path | None, fmt: str | None) -> str:
    """The format asked for, else the one the output file's suffix names, else CSV."""
    if fmt:
        return fmt
    suffix = path.suffix.lower().lstrip(".") if path else ""
    return {"json": "json", "parquet": "parquet", "pq": "parquet"}.get(suffix, "csv")
