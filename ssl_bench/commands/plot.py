"""``ssl-bench plot``: PNG figures of one or several result files (:mod:`ssl_bench.results.figures`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "PNG figures (accuracy matrix, curves, spectra, CKA) of one or several result files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", type=Path, metavar="RESULT.h5")
    p.add_argument("--out", default="plots", type=Path, help="folder for the PNG files (default: plots)")


def main(args: argparse.Namespace) -> int:
    from ssl_bench.results import figures

    for path in figures.plot(args.results, args.out):
        print(path)
    return 0
