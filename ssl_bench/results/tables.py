"""Leaderboard tables built from result files: one table per protocol hash, never mixed.

A table answers "does it learn, and at what cost?" for every method x stream x strategy that has results:
grouped under a heading per stream (a stream sets the probes' task, so accuracies of different streams are
never ranked against each other), each stream's group opens with a **random-init** row (the ``init`` rows
every file stores: the same backbone before any training, averaged over the files of each seed), and every
row has its **gain over init** (final probe accuracy minus the same file's random-init accuracy, paired by
seed, shown as a 95% t-interval over seeds), the **kNN** accuracy beside the probe's, and its **cost**
(minutes per run and the device, from :func:`ssl_bench.results.continual.cost_summary`; the page adds the
training and evaluation minutes of files that recorded them). Every other cell is the mean ±
standard deviation over the row's seeds (n = the seeds column) of a number recomputed from the files
(``ssl_bench.results.continual``), plus the gap to the joint-training row of the same method and stream.
Configurations nobody ran are one line under their stream's rows, not rows of "—"; method-stream pairs with
no results at all are one line under the table. A protocol that says it is not for ranking (``ranked =
false``: smoke, forgetting) gets no rank; the others are ranked within each stream by final accuracy.
Runs that changed the method's default recipe or the strategy/stream options (``variant`` files, see
:mod:`ssl_bench.recipe`) get rows of their own, labelled ``method (variant <identity>)``.
:func:`build` makes the tables as plain data; :func:`render` writes them as markdown, a self-contained HTML
page (per row also the plugin's version, source and paper, and the date the runs were made; each stream's
accuracy heat maps on that stream's own colour scale), CSV or JSON.

The numbers are never the ones a file stores: :func:`collect` keeps only files that pass
:func:`ssl_bench.results.check` (the checks ``ssl-bench submit`` makes of a file on its own,
content hash included) and skips every other file with a warning naming it and why; each
summary is recomputed from the file's arrays by :func:`ssl_bench.results.continual.summarize`.
Every string that comes from a file is escaped for the format it is written in.
"""

from __future__ import annotations

import csv
import html as html_lib
import io
import itertools
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench.errors import UserError
from ssl_bench.results import Result, check, continual, crashing

log = logging.getLogger(__name__)

MISSING = "—"
FORMATS = ("md", "html", "csv", "json")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool
    percent: bool  #: shown x100 with one decimal (accuracies); else three decimals
    help: str
    interval: bool = False  #: shown as a 95% t-interval over seeds [low, high] instead of ± sd

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


#: the columns, in order; the first one ranks the rows
METRICS = (
    Metric("final_avg_acc", "final acc %", True, True, "linear-probe accuracy over all experiences after the last phase"),
    Metric(
        "gain_over_init",
        "gain over init",
        True,
        True,
        "final acc minus the same file's random-init acc, paired by seed: does it learn? (95% t-interval over seeds)",
        interval=True,
    ),
    Metric(
        "knn_acc", "kNN acc %", True, True, "kNN accuracy (the knn evaluator's first k) over all experiences after the last phase"
    ),
    Metric("avg_acc", "avg acc %", True, True, "average incremental accuracy over phases"),
    Metric(
        "gap_to_joint",
        "gap to joint",
        False,
        True,
        "joint training's final acc minus this row's (same protocol, method, stream; paired by seed)",
    ),
    Metric("forgetting_max", "forgetting", False, True, "mean drop from the best accuracy on an experience to the final one"),
    Metric("bwt", "BWT", True, True, "backward transfer"),
    Metric(
        "collapse_auc",
        "collapse AUC",
        False,
        False,
        "AUC of the normalised cumulative singular-value spectrum after the last phase; higher = more collapsed",
    ),
)
#: what a run cost: not ranked, no direction
MINUTES = Metric("minutes", "minutes", False, False, "wall-clock minutes per run (training and evaluation)")
JOINT = "joint"
INIT = "random init"
#: confidence of the gain-over-init interval
CONFIDENCE = 0.95


def collect(folder: str | Path, skipped: list[tuple[Path, str]] | None = None) -> list[Result]:
    """Every good result file under ``folder`` (recursively), in path order.

    A file that fails :func:`ssl_bench.results.check` (truncated, not HDF5, another schema,
    missing attributes, edited, relabelled), that crashes the HDF5 library
    (:func:`ssl_bench.results.crashing`), or a second file of a run already found, is skipped
    with one warning line naming it and why, and appended to ``skipped`` as (path, reason).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"results folder '{folder}' does not exist")
    good: list[Result] = []
    first: dict[tuple, Path] = {}
    paths = sorted(folder.rglob("*.h5"))
    crashed = crashing(paths)
    for path in paths:
        try:
            if path in crashed:
                raise UserError(crashed[path])
            r = Result(path)
            check(r)
            a = r.attrs
            run = (a["protocol_hash"], _label(r), a["stream"], a["strategy"], a["seed"])
            if run in first:
                raise UserError(
                    f"'{path}' is the same run (protocol, method, stream, strategy, seed) as '{first[run]}'; keep one"
                )
        except UserError as err:
            log.warning("skipped a bad result file: %s", err)
            if skipped is not None:
                skipped.append((path, str(err)))
            continue
        first[run] = path
        good.append(r)
    return good


def _label(r: Result) -> str:
    """The method column of a file's row: the method, marked with the run's identity when it is a variant."""
    a = r.attrs
    return f"{a['method']} (variant {str(a.get('run_identity', ''))[:8]})" if a.get("variant") else str(a["method"])


def _stat(values: list[float]) -> dict[str, Any] | None:
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None, "n": len(values)}


def _interval(values: list[float]) -> dict[str, Any] | None:
    """:func:`_stat` plus the 95% Student-t interval of the mean over seeds (``low``/``high``: None under 2 seeds)."""
    from ssl_bench.results.claims.base import t_interval  # here: the claims package imports this module

    stat = _stat(values)
    if stat is None:
        return None
    iv = t_interval(float(v) for v in values if v is not None and np.isfinite(v))
    return {**stat, "low": iv.low if iv else None, "high": iv.high if iv else None}


def _mean_last(value: Any) -> float | None:
    """The mean over experiences of the last row of a per-phase metric ([P, T]), or of a per-experience one ([T])."""
    if value is None:
        return None
    a = np.asarray(value, dtype=float)
    if a.ndim == 0 or a.size == 0:
        return None
    return float(np.mean(a[-1] if a.ndim == 2 else a))


def _numbers(r: Result) -> dict[str, float | None]:
    """One file's numbers of a row: the recomputed summary, the gain over its own random init, kNN, minutes."""
    s = r.summary
    out: dict[str, float | None] = {m.key: s.get(m.key) for m in METRICS}
    out["gain_over_init"] = s["final_avg_acc"] - s["init_avg_acc"] if "init_avg_acc" in s else None
    out["knn_acc"] = _mean_last(r.get("metrics/knn/acc"))
    cost = continual.cost_summary(r)  # total minutes for every file; training and evaluation where recorded
    out["minutes"], out["train_minutes"], out["eval_minutes"] = (
        cost["total_minutes"],
        cost["train_minutes"],
        cost["eval_minutes"],
    )
    return out


def _init_numbers(r: Result) -> dict[str, float | None]:
    """The random-init backbone's numbers stored in a file: probe and kNN accuracy, collapse AUC."""
    auc = r.get("init/collapse/auc")
    return {
        "final_avg_acc": _mean_last(r.get("metrics/acc_init")),
        "knn_acc": _mean_last(r.get("init/knn/acc")),
        "collapse_auc": float(np.asarray(auc, dtype=float).reshape(-1)[-1]) if auc is not None and np.size(auc) else None,
    }


def _plugins(r: Result) -> dict[str, str]:
    raw = r.attrs.get("plugins")
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _dates(runs: list[Result]) -> list[str]:
    """The first and last day the row's runs were made (``created``), as YYYY-MM-DD."""
    days = sorted({str(r.attrs.get("created", ""))[:10] for r in runs} - {""})
    return [days[0], days[-1]] if days else []


def _row(method: str, stream: str, strategy: str, runs: list[Result]) -> dict[str, Any]:
    runs = sorted(runs, key=lambda r: int(r.attrs["seed"]))
    seeds = [int(r.attrs["seed"]) for r in runs]
    if len(set(seeds)) != len(seeds):
        dupes = sorted({s for s in seeds if seeds.count(s) > 1})
        files = ", ".join(str(r.path) for r in runs if int(r.attrs["seed"]) in dupes)
        raise UserError(f"{method}/{stream}/{strategy}: seed(s) {dupes} appear in more than one file ({files}); keep one")
    numbers = [_numbers(r) for r in runs]
    row: dict[str, Any] = {
        "kind": "run",
        "method": method,
        "stream": stream,
        "strategy": strategy,
        "seeds": seeds,
        "files": [str(r.path) for r in runs],
        "per_seed": {},
        "metrics": {},
        "device": "; ".join(sorted({str(continual.cost_summary(r)["device"] or "?") for r in runs})),
        "created": _dates(runs),
    }
    for m in (*METRICS, MINUTES):
        if m.key != "gap_to_joint":
            row["per_seed"][m.key] = {s: n[m.key] for s, n in zip(seeds, numbers)}
            values = list(row["per_seed"][m.key].values())
            row["metrics"][m.key] = _interval(values) if m.interval else _stat(values)
    # where the run's phases were timed (files written since runs record cost/): training and evaluation minutes
    row["cost"] = {k: _stat([n[k] for n in numbers]) for k in ("train_minutes", "eval_minutes")}
    matrices = [np.asarray(r.acc_matrix, dtype=float) for r in runs]
    same = bool(matrices) and all(a.shape == matrices[0].shape for a in matrices)
    row["acc_matrix"] = np.mean(matrices, axis=0).round(4).tolist() if same else None
    inits = [np.asarray(r.get("metrics/acc_init"), dtype=float) for r in runs if r.get("metrics/acc_init") is not None]
    row["acc_init"] = np.mean(inits, axis=0).round(4).tolist() if inits and len(inits) == len(runs) and same else None
    names = runs[0].get("phases/names") if runs else None
    row["phases"] = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else None
    return row


def _init_row(stream: str, runs: list[Result]) -> dict[str, Any]:
    """The random-init row of a stream: per seed, the mean over that seed's files of their stored init numbers."""
    by_seed: dict[int, list[dict[str, float | None]]] = defaultdict(list)
    for r in runs:
        by_seed[int(r.attrs["seed"])].append(_init_numbers(r))
    seeds = sorted(by_seed)
    row: dict[str, Any] = {
        "kind": "init",
        "method": INIT,
        "stream": stream,
        "strategy": MISSING,
        "seeds": seeds,
        "files": [],
        "per_seed": {},
        "metrics": {m.key: None for m in (*METRICS, MINUTES)},
        "rank": None,
        "variant": False,
        "device": "",
        "created": [],
        "cost": {"train_minutes": None, "eval_minutes": None},
        "plugin": None,
        "acc_matrix": None,
        "phases": None,
    }
    for key in ("final_avg_acc", "knn_acc", "collapse_auc"):
        per_seed = {}
        for seed in seeds:
            values = [n[key] for n in by_seed[seed] if n[key] is not None]
            per_seed[seed] = float(np.mean(values)) if values else None
        row["per_seed"][key] = [per_seed[s] for s in seeds]
        row["metrics"][key] = _stat(list(per_seed.values()))
    inits = [np.asarray(r.get("metrics/acc_init"), dtype=float) for r in runs if r.get("metrics/acc_init") is not None]
    same = bool(inits) and all(a.shape == inits[0].shape for a in inits)
    row["acc_init"] = np.mean(inits, axis=0).round(4).tolist() if same else None
    return row


def _gap(row: dict[str, Any], joint: dict[str, Any] | None) -> dict[str, Any] | None:
    """Joint final acc minus this row's, paired by seed when the seeds overlap, else of the means."""
    if joint is None or not row["seeds"] or not joint["seeds"]:
        return None
    own, ref = row["per_seed"]["final_avg_acc"], joint["per_seed"]["final_avg_acc"]
    common = [s for s in own if s in ref and own[s] is not None and ref[s] is not None]
    if common:
        return _stat([ref[s] - own[s] for s in common])
    a, b = row["metrics"]["final_avg_acc"], joint["metrics"]["final_avg_acc"]
    return None if a is None or b is None else {"mean": b["mean"] - a["mean"], "std": None, "n": 0}


def _ranked_protocol(r: Result) -> bool:
    """Whether the leaderboard ranks the file's protocol: the shipped protocol's ``ranked`` (the key is not hashed, so
    older files of a protocol that now says ``ranked = false`` follow it), else the file's own protocol text's."""
    from ssl_bench import protocol as protocols

    a = r.attrs
    try:
        shipped = protocols.load_shipped(str(a["protocol"]), int(a["protocol_version"]))
    except UserError:
        shipped = None
    if shipped is not None and shipped.hash == a["protocol_hash"]:
        return shipped.ranked
    try:
        return bool(json.loads(r["protocol_json"]).get("ranked", True))
    except (UserError, json.JSONDecodeError, AttributeError):
        return True


def _plugin(method: str, runs: list[Result], registry: Any) -> dict[str, Any]:
    """The method's plugin: the versions its runs recorded, and (from ``registry``) where it comes from and its paper."""
    name, source, paper = method, None, None
    entry = registry.entries["method"].get(method) if registry is not None else None
    if entry is not None:
        info = entry.plugin
        name, paper = info.name, info.meta("paper")
        if info.source == "builtin":
            source = "built-in: plugins/" + "/".join(info.module.__name__.split(".")[1:]) + ".py"
        elif info.source.startswith("entry point ("):
            source = "package " + info.source[len("entry point (") : -1]
        else:
            source = info.source
    elif registry is not None:
        source = "not installed here"
    versions = sorted({_plugins(r).get(name, "?") for r in runs})
    return {"name": name, "version": ", ".join(versions), "source": source, "paper": paper if isinstance(paper, str) else None}


def build(results: list[Result], registry: Any = None) -> list[dict[str, Any]]:
    """The tables as plain data (what the JSON format prints), one per protocol hash. ``registry`` (a
    :class:`ssl_bench.registry.Registry`) names each method's plugin source and paper; without it they are None."""
    groups: dict[tuple, list[Result]] = defaultdict(list)
    for r in results:
        a = r.attrs
        groups[(a["protocol"], int(a["protocol_version"]), a["protocol_hash"])].append(r)
    labels = defaultdict(int)
    for name, version, _ in groups:
        labels[(name, version)] += 1
    tables = []
    for (name, version, phash), group in sorted(groups.items()):
        cells: dict[tuple[str, str, str], list[Result]] = defaultdict(list)
        base: dict[str, str] = {}  # row label -> method
        for r in group:
            cells[(_label(r), r.attrs["stream"], r.attrs["strategy"])].append(r)
            base[_label(r)] = str(r.attrs["method"])
        rows = {k: _row(*k, runs) for k, runs in cells.items()}
        pairs = sorted({(m, s) for m, s, _ in cells if base[m] == m})  # default-recipe method-stream pairs
        strategies = sorted({a for m, _, a in cells if base[m] == m})
        missing: dict[str, list[str]] = defaultdict(list)  # stream -> "method / strategy" nobody ran
        for (m, stream), a in itertools.product(pairs, strategies):
            if (m, stream, a) not in cells:
                missing[stream].append(f"{m} / {a}")
        methods, streams = sorted({m for m, _ in pairs}), sorted({s for _, s in pairs} | {k[1] for k in cells})
        not_run = [f"{m} on {s}" for m, s in itertools.product(methods, streams) if (m, s) not in pairs]
        for (label, stream, _strategy), row in rows.items():
            row["variant"] = label != base.get(label, label)
            row["plugin"] = _plugin(base.get(label, label), cells[(label, stream, _strategy)], registry)
            joint = rows.get((base.get(label, label), stream, JOINT))
            row["metrics"]["gap_to_joint"] = _gap(row, joint)
            ref = joint["per_seed"]["final_avg_acc"] if joint else {}
            own = row["per_seed"]["final_avg_acc"]
            row["per_seed"]["gap_to_joint"] = {
                s: ref[s] - own[s] if ref.get(s) is not None and own[s] is not None else None for s in own
            }
        ranked = _ranked_protocol(group[0])
        ordered = _ranked(list(rows.values()), ranked)
        init = [_init_row(stream, [r for r in group if r.attrs["stream"] == stream]) for stream in streams]
        scale = {}  # the heat map's colour scale per stream (a stream sets the probes' task, so its accuracy range)
        for stream in streams:
            rows_of = [row for row in ordered + init if row["stream"] == stream]
            seen = [v for row in rows_of for m in (row["acc_matrix"] or []) for v in m]
            seen += [v for row in rows_of for v in (row["acc_init"] or [])]
            scale[stream] = {"min": min(seen), "max": max(seen)} if seen else {"min": 0.0, "max": 1.0}
        tables.append(
            {
                "protocol": name,
                "version": version,
                "hash": phash,
                "n_files": len(group),
                "ambiguous": labels[(name, version)] > 1,
                "ranked": ranked,
                "rows": ordered,
                "init": init,
                "missing": {stream: missing[stream] for stream in streams if missing[stream]},
                "not_run": not_run,
                "scale": scale,
            }
        )
    return tables


def _ranked(rows: list[dict[str, Any]], ranked: bool = True) -> list[dict[str, Any]]:
    """Sort by stream, then by the first metric (best first; rows without it last), and give competition
    ranks (1, 2, 2, 4) within each stream: a stream sets the probes' task (25-way per experience on a
    class stream, 100-way on the instance stream), so accuracies rank only against the same stream's.
    A protocol that is not for ranking (``ranked`` False): no ranks, rows by method and strategy."""
    first = METRICS[0]
    sign = -1 if first.higher_is_better else 1

    def key(row):
        stat = row["metrics"][first.key]
        if not ranked:
            return (row["stream"], row["method"], row["strategy"])
        return (row["stream"], stat is None, sign * stat["mean"] if stat else 0.0, row["method"], row["strategy"])

    rows = sorted(rows, key=key)
    for _, block in itertools.groupby(rows, key=lambda row: row["stream"]):
        previous, rank = None, 0
        for i, row in enumerate(block, 1):
            stat = row["metrics"][first.key]
            if stat is None or not ranked:
                row["rank"] = None
                continue
            if stat["mean"] != previous:
                rank, previous = i, stat["mean"]
            row["rank"] = rank
    for row in rows:  # per metric, one value per seed, in the order of row["seeds"] (None where not measured)
        row["per_seed"] = {
            key: [None if v is None or not np.isfinite(v) else float(v) for v in (by_seed[s] for s in row["seeds"])]
            for key, by_seed in row["per_seed"].items()
        }
    return rows


# ---------------------------------------------------------------------- formats
def cell(metric: Metric, stat: dict[str, Any] | None) -> str:
    """``61.2 ± 1.3`` (mean ± sd over seeds; percent metrics x100), ``+2.3 [1.1, 3.5]`` for an interval metric
    (mean [95% interval]), ``—`` when missing."""
    if stat is None:
        return MISSING
    scale, digits = (100.0, 1) if metric.percent else (1.0, 3)
    if metric.interval:
        text = f"{stat['mean'] * scale:+.{digits}f}"
        if stat.get("low") is not None:
            text += f" [{stat['low'] * scale:+.{digits}f}, {stat['high'] * scale:+.{digits}f}]"
        return text
    text = f"{stat['mean'] * scale:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std'] * scale:.{digits}f}"
    return text


def md_text(value) -> str:
    """Text from a result file, safe in a markdown table cell: markdown syntax backslashed, HTML escaped, one line."""
    text = "".join(" " if c.isspace() or not c.isprintable() else c for c in str(value))
    return html_lib.escape(re.sub(r"([\\`*_\[\]|~])", r"\\\1", text), quote=False)


def _hex(value) -> str:
    return re.sub(r"[^0-9a-f]", "", str(value))


def csv_text(value) -> str:
    """Text from a result file, safe in a spreadsheet: one line, never read as a formula."""
    text = "".join(" " if c.isspace() or not c.isprintable() else c for c in str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _title(table: dict[str, Any]) -> str:
    return f"{md_text(table['protocol'])} v{int(table['version'])} · protocol `{_hex(table['hash'])[:12]}`"


LEGEND = (
    "One table per protocol hash (results made under different protocols are never compared), rows grouped by "
    "stream (a stream sets the probes' task, so accuracies of different streams are not ranked against each other); "
    "a protocol that is not for ranking (smoke, forgetting: they check that a method works) has no rank column. "
    "Cells are mean ± standard deviation over the row's seeds (n = *seeds*); ↑ higher is better, ↓ lower is better; "
    f"{MISSING} = not measured. Percent columns are accuracy points. Each stream's first row, *random init*, is the "
    "backbone before any training (the init rows every file stores). *gain over init* = final acc minus the same "
    "run's random-init acc, paired by seed: mean [95% t-interval over seeds]; an interval above 0 says the method "
    "learns. *kNN acc* = the kNN evaluator's accuracy beside the linear probe's. *gap to joint* = joint training's "
    "final accuracy minus this row's, same method and stream. *minutes* = wall-clock minutes per run on *device*. "
    "A *variant* row is a run that changed the method's default recipe or options (its identity hash in brackets). "
    "Configurations nobody ran are listed under their stream's rows."
)


def _columns(table: dict[str, Any]) -> list[str]:
    ranked = ["rank"] if table.get("ranked", True) else []
    return [*ranked, "method", "strategy", *(f"{m.label} {m.arrow}" for m in METRICS), "minutes", "device", "seeds"]


def _md_row(table: dict[str, Any], row: dict[str, Any]) -> str:
    rank = [str(row["rank"]) if row.get("rank") is not None else MISSING] if table.get("ranked", True) else []
    method = f"*{INIT}*" if row["kind"] == "init" else md_text(row["method"])
    values = [
        *rank,
        method,
        md_text(row["strategy"]),
        *(cell(m, row["metrics"][m.key]) for m in METRICS),
        f"{row['metrics']['minutes']['mean']:.1f}" if row["metrics"]["minutes"] else MISSING,
        md_text(row["device"]) or MISSING,
        str(len(row["seeds"])),
    ]
    return "| " + " | ".join(values) + " |"


def markdown(
    tables: list[dict[str, Any]], command: str = "ssl-bench leaderboard --results leaderboard/results -o leaderboard/README.md"
) -> str:
    out = [
        "# ssl-bench leaderboard",
        "",
        f"<!-- Generated by `{command}` from the result files; do not edit by hand. -->",
        "",
        LEGEND + " The same tables as one page, sortable and filterable, with each entry's accuracy-matrix heat map, "
        "plugin version, source and paper: `index.html` (`--format html`). To add results: "
        "[CONTRIBUTING.md](../CONTRIBUTING.md).",
        "",
    ]
    if not tables:
        return "\n".join(out + ["_No result files found._", ""])
    for table in tables:
        out += [f"## {_title(table)}", "", f"Protocol hash `{_hex(table['hash'])}`, {table['n_files']} result files."]
        if not table.get("ranked", True):
            out[-1] += " This protocol is not for ranking: no ranks, rows in the order of method and strategy."
        if table["ambiguous"]:
            out.append(
                "**Another table has the same protocol name and version but a different hash: "
                "the protocol file changed; do not compare them.**"
            )
        columns = _columns(table)
        inits = {row["stream"]: row for row in table.get("init", [])}
        for stream, block in itertools.groupby(table["rows"], key=lambda row: row["stream"]):
            out += ["", f"### stream: {md_text(stream)} ({md_text(table['protocol'])} v{int(table['version'])})", ""]
            out.append("| " + " | ".join(columns) + " |")
            out.append("|" + "|".join("---:" if c not in ("method", "strategy", "device") else "---" for c in columns) + "|")
            if stream in inits:
                out.append(_md_row(table, inits[stream]))
            out += [_md_row(table, row) for row in block]
            if table.get("missing", {}).get(stream):
                out += ["", f"Not run on {md_text(stream)}: {', '.join(map(md_text, table['missing'][stream]))}."]
        if table["not_run"]:
            out += ["", f"Not run under this protocol: {', '.join(map(md_text, table['not_run']))}."]
        out.append("")
    return "\n".join(out)


def to_csv(tables: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "protocol",
            "protocol_version",
            "protocol_hash",
            "ranked",
            "rank",
            "method",
            "stream",
            "strategy",
            "n_seeds",
            "seeds",
            *itertools.chain.from_iterable((f"{m.key}_mean", f"{m.key}_std") for m in (*METRICS, MINUTES)),
            "gain_over_init_low",
            "gain_over_init_high",
            "device",
            "plugin_version",
        ]
    )
    for t in tables:
        for row in [*t.get("init", []), *t["rows"]]:
            stats = [row["metrics"][m.key] or {} for m in (*METRICS, MINUTES)]
            gain = row["metrics"]["gain_over_init"] or {}
            w.writerow(
                [
                    csv_text(t["protocol"]),
                    t["version"],
                    csv_text(t["hash"]),
                    int(bool(t.get("ranked", True))),
                    "" if row.get("rank") is None else row["rank"],
                    *(csv_text(row[k]) for k in ("method", "stream", "strategy")),
                    len(row["seeds"]),
                    " ".join(map(str, row["seeds"])),
                    *itertools.chain.from_iterable((_num(s.get("mean")), _num(s.get("std"))) for s in stats),
                    _num(gain.get("low")),
                    _num(gain.get("high")),
                    csv_text(row["device"]),
                    csv_text((row.get("plugin") or {}).get("version", "")),
                ]
            )
    return buf.getvalue()


def _num(value) -> str:
    return "" if value is None else repr(float(value))


def to_json(tables: list[dict[str, Any]]) -> str:
    doc = {
        "metrics": [
            {
                "key": m.key,
                "label": m.label,
                "higher_is_better": m.higher_is_better,
                "percent": m.percent,
                "interval": m.interval,
                "help": m.help,
            }
            for m in METRICS
        ],
        "legend": LEGEND,
        "tables": tables,
    }
    return json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def html(tables: list[dict[str, Any]]) -> str:
    """One self-contained page: the JSON document inlined into the template (no network, no CDN)."""
    template = (resources.files("ssl_bench") / "templates" / "leaderboard.html").read_text(encoding="utf-8")
    # no <, > or & at all in the inlined JSON: a string can never close the <script> element or open a comment
    data = to_json(tables).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    if template.count("/*LEADERBOARD_DATA*/null") != 1:
        raise RuntimeError("templates/leaderboard.html lost its /*LEADERBOARD_DATA*/null placeholder")
    return template.replace("/*LEADERBOARD_DATA*/null", data)


def render(tables: list[dict[str, Any]], fmt: str) -> str:
    """The tables in one of :data:`FORMATS`; every format depends on the result files only (CI diffs them)."""
    if fmt == "md":
        return markdown(tables)
    if fmt == "html":
        return html(tables)
    if fmt == "csv":
        return to_csv(tables)
    if fmt == "json":
        return to_json(tables)
    raise UserError(f"unknown leaderboard format '{fmt}'; choose one of {', '.join(FORMATS)}")


def format_for(path: Path | None, fmt: str | None) -> str:
    """The format asked for, else the one the output file's suffix names, else markdown."""
    if fmt:
        return fmt
    suffix = path.suffix.lower().lstrip(".") if path else ""
    return {"md": "md", "markdown": "md", "html": "html", "htm": "html", "csv": "csv", "json": "json"}.get(suffix, "md")
