"""``ssl-bench verify``: re-run a result file's seed from its stored configuration and compare
(:mod:`ssl_bench.results.reproduce`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssl_bench.commands import _common

HELP = "re-run a result file's seed on the CPU from its stored configuration and compare"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", type=Path, metavar="RESULT.h5")
    _common.add_plugin(p, "load these plugins instead of the --plugin paths stored in the file (repeatable)")
    p.add_argument(
        "--any-protocol", action="store_true", help="re-run even a protocol that is not a shipped CPU-family one (may take hours)"
    )
    p.add_argument(
        "--skip-non-cpu",
        action="store_true",
        help="skip files under protocols that are not shipped CPU-family ones, with a note, instead of failing (what CI runs)",
    )
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the re-run's result file in DIR")


def main(args: argparse.Namespace) -> int:
    from ssl_bench.results import reproduce

    failed = 0
    for path in args.results:
        outcome = reproduce.verify(
            path,
            plugins=args.plugin,
            any_protocol=args.any_protocol,
            skip_other=args.skip_non_cpu,
            keep=args.keep,
            progress=not args.quiet,
        )
        if outcome.skipped:
            print(f"skipped: {path}: {outcome.skipped}")
            continue
        if not outcome.same_machine:
            print(f"note: {path}: this machine is not the one that made the file ({'; '.join(outcome.machine)})")
        if outcome.ok:
            worst = max(outcome.differences.values(), default=0.0)
            print(f"reproduced: {path} (largest |difference| {worst:.3f}; {outcome.describe()})")
        else:
            failed += 1
            print(
                f"ssl-bench: error: '{path}' does not reproduce: {'; '.join(outcome.failures)} ({outcome.describe()})",
                file=sys.stderr,
            )
    return 1 if failed else 0
