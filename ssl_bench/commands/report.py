"""``ssl-bench report``: the founding papers' claims checked against a folder of result files
(:mod:`ssl_bench.results.claims`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "findings report: the papers' claims checked against result files (markdown + PNGs)"
log = logging.getLogger("ssl_bench")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="folder searched for .h5 files (recursively)")
    p.add_argument("-o", "--output", type=Path, help="write the markdown here instead of stdout")
    p.add_argument("--figures", type=Path, metavar="DIR", help="also draw the figures as PNG files into DIR")


def main(args: argparse.Namespace) -> int:
    from ssl_bench.results import claims

    text = claims.report(args.results, args.output, args.figures)
    if args.output is None:
        print(text, end="")
    else:
        log.info("wrote %s", args.output)
    return 0
