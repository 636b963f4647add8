"""Leaderboard tables built from result files, one table per protocol (hashes never mixed)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ssl_bench.errors import UserError
from ssl_bench.results import Result


def collect(folder: str | Path) -> list[Result]:
    """Every result file under ``folder`` (recursively)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"results folder '{folder}' does not exist")
    return [Result(p) for p in sorted(folder.rglob("*.h5"))]


def markdown(results: list[Result]) -> str:
    """Markdown: per protocol, method x stream x strategy with mean ± std of final average accuracy."""
    if not results:
        return "_No result files found._\n"
    by_protocol = defaultdict(list)
    for r in results:
        by_protocol[(r.attrs["protocol"], r.attrs["protocol_version"], r.attrs["protocol_hash"])].append(r)
    out = []
    for (name, version, phash), group in sorted(by_protocol.items()):
        rows = defaultdict(list)
        for r in group:
            rows[(r.attrs["method"], r.attrs["stream"], r.attrs["strategy"])].append(r.summary["final_avg_acc"])
        ranked = sorted(rows.items(), key=lambda kv: -np.mean(kv[1]))
        out.append(f"## {name} v{version} (`{phash[:12]}`)\n")
        out.append("| rank | method | stream | strategy | final avg acc ↑ | seeds |")
        out.append("|---:|---|---|---|---:|---:|")
        for rank, ((method, stream, strategy), accs) in enumerate(ranked, 1):
            std = f" ± {np.std(accs, ddof=1) * 100:.1f}" if len(accs) > 1 else ""
            out.append(f"| {rank} | {method} | {stream} | {strategy} | {np.mean(accs) * 100:.1f}{std} | {len(accs)} |")
        out.append("")
    return "\n".join(out) + "\n"
