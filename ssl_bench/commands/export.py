"""``ssl-bench export``: every number of a folder of result files as one long table (:mod:`ssl_bench.results.rows`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ssl_bench.commands import _common
from ssl_bench.errors import UserError

HELP = "every number of a folder of result files as one long table (csv, json, parquet)"
log = logging.getLogger("ssl_bench")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="folder searched for .h5 files (recursively)")
    p.add_argument("--format", choices=["csv", "json", "parquet"], help="default: from -o's suffix, else csv")
    p.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout (required for parquet)")


def main(args: argparse.Namespace) -> int:
    from ssl_bench.results import rows, tables

    fmt = rows.format_for(args.output, args.format)
    if fmt == "parquet" and args.output is None:
        raise UserError("--format parquet writes a binary file: give -o FILE.parquet")
    data = rows.render(rows.rows(tables.collect(args.results)), fmt)
    if args.output is None:
        print(data, end="")
        return 0
    _common.write_output(args.output, data)
    log.info("wrote %s (%s)", args.output, fmt)
    return 0
