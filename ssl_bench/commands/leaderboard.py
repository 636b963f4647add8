"""``ssl-bench leaderboard``: tables from result files, one per protocol hash (:mod:`ssl_bench.results.tables`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ssl_bench.commands import _common

HELP = "leaderboard tables from result files, one per protocol hash"
log = logging.getLogger("ssl_bench")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results",
        default=Path("leaderboard") / "results",
        type=Path,
        help="folder searched for .h5 files (default: leaderboard/results)",
    )
    p.add_argument(
        "--format",
        choices=["md", "html", "csv", "json"],
        help="md (default), html (one self-contained page), csv or json; default: from -o's suffix",
    )
    p.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a file was skipped as bad (what CI runs); without it, bad files are only warned about",
    )


def main(args: argparse.Namespace) -> int:
    from ssl_bench.results import tables

    fmt = tables.format_for(args.output, args.format)
    skipped: list = []
    found = tables.collect(args.results, skipped)
    registry = None
    if fmt in ("html", "json") and found:  # each method's plugin source and paper (the page shows them per row)
        from ssl_bench.registry import Registry

        registry = Registry.discover()
    text = tables.render(tables.build(found, registry), fmt)
    if args.output is None:
        print(text, end="")
    else:
        _common.write_output(args.output, text)
        log.info("wrote %s (%s)", args.output, fmt)
    if skipped and args.strict:
        print(f"ssl-bench: error: {len(skipped)} bad result file(s) skipped (named above); fix or remove them", file=sys.stderr)
        return 1
    return 0
