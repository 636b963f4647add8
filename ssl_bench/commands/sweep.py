"""``ssl-bench sweep``: every combination of methods, streams, strategies and seeds (or a grid file's union),
through a local process pool or submitit (:mod:`ssl_bench.engine.launch`); finished runs are skipped."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssl_bench.commands import _common
from ssl_bench.errors import UserError

HELP = "run every combination of methods, streams, strategies and seeds"


def add_arguments(p: argparse.ArgumentParser) -> None:
    _common.add_run_options(p)
    p.add_argument("--methods", help="comma-separated method names (default: as for run)")
    p.add_argument("--streams", help="comma-separated stream names (default: the protocol's default)")
    p.add_argument("--strategies", help="comma-separated strategies, each possibly 'a+b' (default: the protocol's default)")
    p.add_argument(
        "--grid",
        type=Path,
        metavar="FILE.toml",
        help="run the union of the products listed as [[grid]] tables (methods, streams, strategies; optionally a "
        "protocol other than --protocol) instead",
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs that have no result file yet; run nothing")
    p.add_argument(
        "--seeds",
        default="all",
        help="'all' (the protocol's seeds, default) or e.g. 0,1,2; seeds outside the protocol's run too (e.g. more "
        "seeds for an inconclusive claim), but the leaderboard takes only the protocol's seeds",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (default: 1)")
    p.add_argument(
        "--per-gpu",
        type=int,
        metavar="K",
        help="local launcher: K runs at the same time on every visible GPU, each pinned to its GPU (CUDA_VISIBLE_DEVICES); "
        "replaces --jobs",
    )
    p.add_argument(
        "--launcher",
        default="local",
        choices=["local", "slurm", "submitit-local"],
        help="local process pool (default), or submitit: SLURM or its local executor",
    )
    p.add_argument(
        "--slurm",
        action="append",
        default=[],
        type=_common.key_value,
        metavar="KEY=VALUE",
        help="submitit parameter for the slurm launcher, e.g. slurm_partition=gpu, gpus_per_node=1",
    )


def timings(configs, folders: list[Path]) -> dict[tuple[str, ...], list[float]]:
    """Seconds of the finished runs in ``folders`` (``--out``, the leaderboard) under the configs' protocols (same
    hash), keyed by (protocol hash, method, stream, strategy), (hash, method, strategy), (hash, method) and (hash,)."""
    from ssl_bench import results
    from ssl_bench.errors import UserError

    hashes = {c.protocol.label: c.protocol.hash for c in configs}
    found: dict[tuple[str, ...], list[float]] = {}
    seen: set[Path] = set()
    for folder in folders:
        for label in hashes:
            for path in [*folder.glob(f"{label}__*.h5"), *folder.glob(f"{label}/*/{label}__*.h5")]:
                if path.resolve() in seen:
                    continue
                seen.add(path.resolve())
                try:
                    a = results.Result(path).attrs
                except UserError:
                    continue
                seconds = a.get("seconds")
                if a.get("protocol_hash") != hashes[label] or not isinstance(seconds, (int, float)):
                    continue
                h, m, st, sg = str(a["protocol_hash"]), str(a["method"]), str(a["stream"]), str(a["strategy"])
                for key in ((h, m, st, sg), (h, m, sg), (h, m), (h,)):
                    found.setdefault(key, []).append(float(seconds))
    return found


def estimate(todo, folders: list[Path], jobs: int) -> str:
    """One line: about how long the runs ``todo`` take, from the median time of the most alike finished runs of the
    same protocol (same method, stream and strategy; else method and strategy; else method; else any)."""
    import statistics

    from ssl_bench.engine import launch

    found = timings(todo, folders)
    total, guessed, unknown = 0.0, 0, []
    for c in todo:
        h = c.protocol.hash
        keys = ((h, c.method, c.stream, c.strategy), (h, c.method, c.strategy), (h, c.method), (h,))
        times = next((found[k] for k in keys if k in found), None)
        if times is None:
            unknown.append(launch.describe(c))
            continue
        total += statistics.median(times)
        guessed += 1
    where = " and ".join(str(f) for f in folders)
    if not guessed:
        return f"time: no estimate (no finished run of these protocols in {where} to time them by)"
    line = (
        f"time: about {total / 60:.0f} min of runs for {guessed} of them (each the median of the most alike finished runs "
        f"of its protocol in {where})"
    )
    if jobs > 1:
        line += f", about {total / 60 / jobs:.0f} min with {jobs} at a time if they share the machine as those did"
    if unknown:
        line += f"; no estimate for {len(unknown)} ({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''})"
    return line


def main(args: argparse.Namespace) -> int:
    from ssl_bench import protocol
    from ssl_bench.engine import check_writable, launch
    from ssl_bench.registry import Registry

    proto = protocol.load(args.protocol)
    if args.jobs < 1 or (args.per_gpu is not None and args.per_gpu < 1):
        flag, value = ("--jobs", args.jobs) if args.jobs < 1 else ("--per-gpu", args.per_gpu)
        raise UserError(f"{flag} is how many runs go at the same time: give 1 or more, got {value}")
    if not args.dry_run:
        check_writable(args.out, keep=False)  # before the plugins: a file-size limit of 0 breaks their imports, not one line
    registry = Registry.discover(args.plugin)
    split = lambda text: [x for x in (text or "").split(",") if x]  # noqa: E731
    base = _common.run_config(args, registry, proto)
    if args.grid and (args.methods or args.streams or args.strategies):
        raise UserError("--grid lists the methods, streams and strategies itself: drop --methods, --streams and --strategies")
    if args.grid:
        cells = launch.grid(args.grid)
    else:
        methods, streams = split(args.methods) or [base.method], split(args.streams) or [base.stream]
        cells = [(methods, streams, split(args.strategies) or [base.strategy], None)]
    configs = launch.expand(base, registry, cells, launch.seeds_from(args.seeds, proto))  # every run planned and checked
    if args.dry_run:
        todo = [c for c in configs if not c.result_path.exists()]
        for c in todo:
            print(f"{launch.describe(c)}  {c.result_path}")
        print(f"{len(todo)} of {len(configs)} runs to do ({len(configs) - len(todo)} have result files)")
        if todo:
            print(estimate(todo, [args.out, Path("leaderboard") / "results"], args.per_gpu or args.jobs))
        return 0
    launch.check_streams([c for c in configs if not c.result_path.exists()], registry)
    paths, failures = launch.run(configs, jobs=args.jobs, launcher=args.launcher, slurm=dict(args.slurm), per_gpu=args.per_gpu)
    for path in paths:
        print(path)
    for failure in failures:
        print(f"ssl-bench: failed: {failure}", file=sys.stderr)
    return 1 if failures else 0
