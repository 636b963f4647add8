"""``ssl-bench submit``: validate result files and copy them into the leaderboard (:mod:`ssl_bench.results.submission`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "validate result files and copy them into the leaderboard"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="*", type=Path, metavar="RESULT.h5")
    p.add_argument(
        "--to",
        type=Path,
        help="the leaderboard/results folder of your ssl-bench checkout (default: that of the checkout you are in)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate only, copy nothing (what CI runs); with no files, checks the target and leaderboard/plugins.txt",
    )
    p.add_argument("--replace", action="store_true", help="overwrite a different file already submitted for the same run")


def main(args: argparse.Namespace) -> int:
    from ssl_bench.results import submission

    accepted = submission.submit(args.results, to=args.to, check_only=args.check, replace=args.replace)
    to, root = submission.target(args.to)
    print(f"{'checked against' if args.check else 'submitted to'} {to}")
    verb = "valid" if args.check else "submitted"
    for item in accepted:
        d = submission.describe(item)
        print(
            f"{verb}: {d['file']}  ({d['method']} / {d['stream']} / {d['strategy']}, seed {d['seed']}, "
            f"final acc {100 * d['final_avg_acc']:.1f}%)"
        )
    if not args.check and accepted:
        print(
            f"next, in {root}: ssl-bench leaderboard -o leaderboard/README.md && "
            "ssl-bench leaderboard -o leaderboard/index.html, then bash .ci/leaderboard origin/main "
            "(what CI runs), commit and open a pull request"
        )
    return 0
