"""``ssl-bench verify``: re-run a result file's seed from its stored configuration and compare
(:mod:`ssl_bench.results.reproduce`).

``--one-per-configuration`` re-runs one seed of each configuration (protocol, method, stream, strategy,
variant) among the files given, chosen at random so that no seed is known in advance to be the checked one,
and ``--budget MINUTES`` stops starting re-runs that would not finish in time (estimated from how long the
file's own run took). Both say, per file, what was skipped and why: the leaderboard workflow
(``.ci/leaderboard``) runs them on the files a pull request adds.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
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
    p.add_argument(
        "--one-per-configuration",
        action="store_true",
        help="re-run one seed, chosen at random, of each protocol x method x stream x strategy among the files (what CI runs)",
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="MINUTES",
        help="start no re-run that would end after MINUTES (estimated from the file's own run time); say which were skipped",
    )
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the re-run's result file in DIR")


def configuration(r) -> tuple[str, ...]:
    """What makes two files seeds of one configuration: protocol hash, method, stream, strategy, variant."""
    a = r.attrs
    return (
        str(a["protocol_hash"]),
        str(a["method"]),
        str(a["stream"]),
        str(a["strategy"]),
        str(a.get("run_identity", "")) if a.get("variant") else "",
    )


def choose(paths: list[Path], rng: random.Random) -> tuple[list[Path], dict[Path, str]]:
    """One file per configuration (chosen with ``rng``), and why each other file is not re-run."""
    from ssl_bench import results

    groups: dict[tuple[str, ...], list[tuple[Path, int]]] = {}
    for path in paths:
        r = results.Result(path)
        groups.setdefault(configuration(r), []).append((path, int(r.attrs["seed"])))
    chosen, skipped = [], {}
    for (_, method, stream, strategy, _), files in groups.items():
        path, seed = rng.choice(files)
        chosen.append(path)
        for other, other_seed in files:
            if other != path:
                skipped[other] = (
                    f"seed {other_seed} not re-run: one seed per configuration, and seed {seed} of "
                    f"{method} / {stream} / {strategy} was drawn"
                )
    return chosen, skipped


def estimate(path: Path) -> float:
    """Seconds a re-run of ``path`` is expected to take: as long as its own run took (0 when not recorded)."""
    from ssl_bench import results

    seconds = results.Result(path).attrs.get("seconds")
    return float(seconds) if isinstance(seconds, (int, float)) else 0.0


def rerunnable(path: Path) -> bool:
    """Whether ``verify`` re-runs the file's protocol without ``--any-protocol``."""
    import json

    from ssl_bench import protocol, results
    from ssl_bench.results import reproduce

    return reproduce.cpu_sized(protocol.Protocol.model_validate(json.loads(results.Result(path)["protocol_json"])))


def main(args: argparse.Namespace) -> int:
    from ssl_bench.results import reproduce

    todo, skipped = list(args.results), {}
    if args.one_per_configuration:
        todo, skipped = choose(todo, random.SystemRandom())
    start, failed, done = time.monotonic(), 0, 0
    for path in args.results:
        if path in skipped:
            print(f"skipped: {path}: {skipped[path]}")
            continue
        if args.budget is not None and (args.any_protocol or rerunnable(path)):
            left, needed = 60 * args.budget - (time.monotonic() - start), estimate(path)
            if needed > left:
                print(
                    f"skipped: {path}: not re-run within the {args.budget:g}-minute budget: its run took "
                    f"{needed / 60:.1f} min and {max(left, 0) / 60:.1f} min are left"
                )
                continue
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
            done += 1
            worst = max(outcome.differences.values(), default=0.0)
            print(f"reproduced: {path} (largest |difference| {worst:.3f}; {outcome.describe()})")
        else:
            failed += 1
            print(
                f"ssl-bench: error: '{path}' does not reproduce: {'; '.join(outcome.failures)} ({outcome.describe()})",
                file=sys.stderr,
            )
    if args.one_per_configuration or args.budget is not None:
        print(f"verify: {done} re-run(s) reproduced, {failed} failed, {len(args.results) - done - failed} skipped")
    return 1 if failed else 0
