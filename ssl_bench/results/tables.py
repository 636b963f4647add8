"""Leaderboard tables built from result files: one table per protocol hash, never mixed.

A table has one row per method x stream x strategy: every strategy seen under that protocol
for every method-stream pair that has results (a combination nobody ran is a row of "—",
never silently dropped), and a "not run" line names the method-stream pairs with no
results at all. Runs that changed the method's default recipe or the strategy/stream options
(``variant`` files, see :mod:`ssl_bench.recipe`) get rows of their own, labelled
``method (variant <identity>)``, next to the default-recipe row. Each cell is the mean ±
standard deviation over the row's seeds of a summary number stored in the files
(``ssl_bench.results.continual``), plus the gap to the joint-training row of the same method and
stream. :func:`build` makes the tables as plain data; :func:`render` writes them as
markdown, a self-contained HTML page, CSV or JSON.

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
from ssl_bench.results import Result, check, crashing

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

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


#: the columns, in order; the first one ranks the rows
METRICS = (
    Metric("final_avg_acc", "final acc %", True, True, "accuracy over all experiences after the last phase"),
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
JOINT = "joint"


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


def _row(method: str, stream: str, strategy: str, runs: list[Result]) -> dict[str, Any]:
    runs = sorted(runs, key=lambda r: int(r.attrs["seed"]))
    seeds = [int(r.attrs["seed"]) for r in runs]
    if len(set(seeds)) != len(seeds):
        dupes = sorted({s for s in seeds if seeds.count(s) > 1})
        files = ", ".join(str(r.path) for r in runs if int(r.attrs["seed"]) in dupes)
        raise UserError(f"{method}/{stream}/{strategy}: seed(s) {dupes} appear in more than one file ({files}); keep one")
    row: dict[str, Any] = {
        "method": method,
        "stream": stream,
        "strategy": strategy,
        "seeds": seeds,
        "files": [str(r.path) for r in runs],
        "per_seed": {},
        "metrics": {},
    }
    for m in METRICS:
        if m.key != "gap_to_joint":
            row["per_seed"][m.key] = {s: r.summary.get(m.key) for s, r in zip(seeds, runs)}
            row["metrics"][m.key] = _stat(list(row["per_seed"][m.key].values()))
    matrices = [np.asarray(r.acc_matrix, dtype=float) for r in runs]
    same = bool(matrices) and all(a.shape == matrices[0].shape for a in matrices)
    row["acc_matrix"] = np.mean(matrices, axis=0).round(4).tolist() if same else None
    inits = [np.asarray(r.get("metrics/acc_init"), dtype=float) for r in runs if r.get("metrics/acc_init") is not None]
    row["acc_init"] = np.mean(inits, axis=0).round(4).tolist() if inits and len(inits) == len(runs) and same else None
    names = runs[0].get("phases/names") if runs else None
    row["phases"] = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else None
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


def build(results: list[Result]) -> list[dict[str, Any]]:
    """The tables as plain data (what the JSON format prints), one per protocol hash."""
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
        pairs = sorted({(m, s) for m, s, _ in cells if base[m] == m})  # default-recipe rows: every strategy seen
        strategies = sorted({k[2] for k in cells})
        rows = {(m, s, a): _row(m, s, a, cells.get((m, s, a), [])) for (m, s), a in itertools.product(pairs, strategies)}
        rows.update({k: _row(*k, runs) for k, runs in cells.items() if base[k[0]] != k[0]})  # variants: as run
        methods, streams = sorted({m for m, _ in pairs}), sorted({s for _, s in pairs})
        not_run = [f"{m} on {s}" for m, s in itertools.product(methods, streams) if (m, s) not in pairs]
        for (label, stream, _strategy), row in rows.items():
            row["variant"] = label != base.get(label, label)
            joint = rows.get((base.get(label, label), stream, JOINT))
            row["metrics"]["gap_to_joint"] = _gap(row, joint)
            ref = joint["per_seed"]["final_avg_acc"] if joint else {}
            own = row["per_seed"]["final_avg_acc"]
            row["per_seed"]["gap_to_joint"] = {
                s: ref[s] - own[s] if ref.get(s) is not None and own[s] is not None else None for s in own
            }
        ordered = _ranked(list(rows.values()))
        tables.append(
            {
                "protocol": name,
                "version": version,
                "hash": phash,
                "n_files": len(group),
                "ambiguous": labels[(name, version)] > 1,
                "rows": ordered,
                "not_run": not_run,
            }
        )
    return tables


def _ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort by stream, then by the first metric (best first; rows without it last), and give competition
    ranks (1, 2, 2, 4) within each stream: a stream sets the probes' task (25-way per experience on a
    class stream, 100-way on the instance stream), so accuracies rank only against the same stream's."""
    first = METRICS[0]
    sign = -1 if first.higher_is_better else 1

    def key(row):
        stat = row["metrics"][first.key]
        return (row["stream"], stat is None, sign * stat["mean"] if stat else 0.0, row["method"], row["strategy"])

    rows = sorted(rows, key=key)
    for _, block in itertools.groupby(rows, key=lambda row: row["stream"]):
        previous, rank = None, 0
        for i, row in enumerate(block, 1):
            stat = row["metrics"][first.key]
            if stat is None:
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
    """``61.2 ± 1.3`` (percent metrics x100), ``—`` when missing."""
    if stat is None:
        return MISSING
    scale, digits = (100.0, 1) if metric.percent else (1.0, 3)
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


def markdown(
    tables: list[dict[str, Any]], command: str = "ssl-bench leaderboard --results leaderboard/results -o leaderboard/README.md"
) -> str:
    out = [
        "# ssl-bench leaderboard",
        "",
        f"<!-- Generated by `{command}` from the result files; do not edit by hand. -->",
        "",
        "One table per protocol hash (results made under different protocols are never compared), ranked per stream. "
        "Cells are mean ± standard deviation over seeds; ↑ higher is better, ↓ lower is better; "
        f"{MISSING} = not measured or not run. Percent columns are accuracy points. "
        "*gap to joint* = joint training's final accuracy minus this row's, same method and stream. "
        "A *variant* row is a run that changed the method's default recipe or options (its identity hash in brackets). "
        "The same tables as one page, sortable and filterable, with each entry's accuracy-matrix heat map: "
        "`index.html` (`--format html`). To add results: [CONTRIBUTING.md](../CONTRIBUTING.md).",
        "",
    ]
    if not tables:
        return "\n".join(out + ["_No result files found._", ""])
    for table in tables:
        out += [f"## {_title(table)}", "", f"Protocol hash `{_hex(table['hash'])}`, {table['n_files']} result files."]
        if table["ambiguous"]:
            out.append(
                "**Another table has the same protocol name and version but a different hash: "
                "the protocol file changed; do not compare them.**"
            )
        out.append("")
        header = ["rank", "method", "stream", "strategy", *(f"{m.label} {m.arrow}" for m in METRICS), "seeds"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---:", "---", "---", "---", *["---:"] * len(METRICS), "---:"]) + "|")
        for row in table["rows"]:
            values = [
                str(row["rank"]) if row["rank"] is not None else MISSING,
                *(md_text(row[k]) for k in ("method", "stream", "strategy")),
                *(cell(m, row["metrics"][m.key]) for m in METRICS),
                str(len(row["seeds"])),
            ]
            out.append("| " + " | ".join(values) + " |")
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
            "rank",
            "method",
            "stream",
            "strategy",
            "n_seeds",
            "seeds",
            *itertools.chain.from_iterable((f"{m.key}_mean", f"{m.key}_std") for m in METRICS),
        ]
    )
    for t in tables:
        for row in t["rows"]:
            stats = [row["metrics"][m.key] or {} for m in METRICS]
            w.writerow(
                [
                    csv_text(t["protocol"]),
                    t["version"],
                    csv_text(t["hash"]),
                    "" if row["rank"] is None else row["rank"],
                    *(csv_text(row[k]) for k in ("method", "stream", "strategy")),
                    len(row["seeds"]),
                    " ".join(map(str, row["seeds"])),
                    *itertools.chain.from_iterable((_num(s.get("mean")), _num(s.get("std"))) for s in stats),
                ]
            )
    return buf.getvalue()


def _num(value) -> str:
    return "" if value is None else repr(float(value))


def to_json(tables: list[dict[str, Any]]) -> str:
    doc = {
        "metrics": [
            {"key": m.key, "label": m.label, "higher_is_better": m.higher_is_better, "percent": m.percent, "help": m.help}
            for m in METRICS
        ],
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
