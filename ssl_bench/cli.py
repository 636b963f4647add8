"""The ``ssl-bench`` command line: run, list, show, leaderboard.

Bad input (a misspelt plugin, a broken protocol, an unwritable folder) ends with one line
on stderr saying what to fix, and exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from pathlib import Path

import numpy as np

import ssl_bench
from ssl_bench import protocol as protocols
from ssl_bench.errors import UserError

log = logging.getLogger("ssl_bench")


def _key_value(text: str) -> tuple[str, object]:
    """Parse ``key=value``; the value is read as TOML (numbers, booleans, lists), else kept as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars, warnings only")
    parser = argparse.ArgumentParser(prog="ssl-bench", description="Benchmark self-supervised pre-training on streaming data.",
                                     parents=[common])
    parser.add_argument("--version", action="version", version=f"ssl-bench {ssl_bench.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, parents=()) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common, *parents])

    shared = argparse.ArgumentParser(add_help=False)  # options of both run and sweep
    shared.add_argument("--plugin", action="append", default=[], metavar="NAME_OR_PATH",
                        help="load a plugin: installed entry-point name, importable module, or .py file (repeatable)")
    shared.add_argument("--protocol", default="smoke", help="shipped protocol name or .toml path (default: smoke)")
    shared.add_argument("--out", default="runs", type=Path, help="folder for result files (default: runs)")
    shared.add_argument("--method-opt", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                        help="method option, e.g. temperature=0.2 (repeatable)")
    shared.add_argument("--strategy-opt", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                        help="strategy option; with several strategies prefix the name: replay.buffer_size=500")
    shared.add_argument("--data-root", help="folder holding the protocol's dataset")
    shared.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    shared.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: auto)")

    run = command("run", help="train and evaluate one run under a protocol, write a result file", parents=[shared])
    run.add_argument("--method", help="method name (default: the --plugin's only method, else the protocol's default)")
    run.add_argument("--stream", help="stream name (default: the protocol's default)")
    run.add_argument("--strategy", help="strategy name, or several joined by '+' (default: the protocol's default)")
    run.add_argument("--seed", type=int, help="seed (default: the protocol's first seed)")
    run.add_argument("--restart", action="store_true", help="ignore a checkpoint left by an interrupted run")

    sweep = command("sweep", help="run every combination of methods, streams, strategies and seeds", parents=[shared])
    sweep.add_argument("--methods", help="comma-separated method names (default: as for run)")
    sweep.add_argument("--streams", help="comma-separated stream names (default: the protocol's default)")
    sweep.add_argument("--strategies", help="comma-separated strategies, each possibly 'a+b' (default: the protocol's default)")
    sweep.add_argument("--seeds", default="all", help="'all' (the protocol's seeds, default) or e.g. 0,1,2")
    sweep.add_argument("--jobs", type=int, default=1, help="runs at the same time (default: 1)")
    sweep.add_argument("--launcher", default="local", choices=["local", "slurm", "submitit-local"],
                       help="local process pool (default), or submitit: SLURM or its local executor")
    sweep.add_argument("--slurm", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                       help="submitit parameter for the slurm launcher, e.g. slurm_partition=gpu, gpus_per_node=1")

    lst = command("list", help="list discovered plugins and what they provide, and the shipped protocols")
    lst.add_argument("--plugin", action="append", default=[], metavar="NAME_OR_PATH", help="also load this plugin")

    show = command("show", help="print a readable summary of a result file")
    show.add_argument("result", type=Path)

    board = command("leaderboard", help="markdown tables from result files, one per protocol")
    board.add_argument("--results", default="leaderboard", type=Path, help="folder searched for .h5 files (default: leaderboard)")
    return parser


def _config(args, registry, proto, **chosen):
    """A RunConfig from the shared options, with method/stream/strategy defaults filled in."""
    from ssl_bench.engine import RunConfig

    def pick(kind: str) -> str:
        return chosen.get(kind) or registry.default_for(kind) or getattr(proto.defaults, kind)

    config = RunConfig(protocol=proto, method=pick("method"), stream=pick("stream"), strategy=pick("strategy"),
                       seed=proto.seeds[0] if chosen.get("seed") is None else chosen["seed"], out=args.out,
                       method_options=dict(args.method_opt), strategy_options=dict(args.strategy_opt),
                       data_root=args.data_root, download=args.download, device=args.device,
                       plugins=list(args.plugin), progress=not args.quiet)
    _validate(registry, [config.method], [config.stream], [config.strategy])
    return config


def _validate(registry, methods, streams, strategies) -> None:
    """Unknown names fail here, before any data is loaded."""
    for strategy in strategies:
        for part in strategy.split("+"):
            registry.get("strategy", part)
    for method in methods:
        registry.get("method", method)
    for stream in streams:
        registry.get("stream", stream)


def cmd_run(args) -> int:
    from ssl_bench.engine import execute
    from ssl_bench.registry import Registry

    proto = protocols.load(args.protocol)
    registry = Registry.discover(args.plugin)
    config = _config(args, registry, proto, method=args.method, stream=args.stream, strategy=args.strategy, seed=args.seed)
    path = execute(config, registry, resume=not args.restart)
    if path is not None:  # None on the other ranks under torchrun
        print(path)
    return 0


def cmd_sweep(args) -> int:
    from ssl_bench import sweep
    from ssl_bench.engine import check_writable
    from ssl_bench.registry import Registry

    proto = protocols.load(args.protocol)
    registry = Registry.discover(args.plugin)
    split = lambda text: [x for x in (text or "").split(",") if x]  # noqa: E731
    base = _config(args, registry, proto)
    methods, streams = split(args.methods) or [base.method], split(args.streams) or [base.stream]
    strategies = split(args.strategies) or [base.strategy]
    _validate(registry, methods, streams, strategies)
    configs = sweep.expand(base, methods, streams, strategies, sweep.seeds_from(args.seeds, proto))
    check_writable(args.out)
    paths, failures = sweep.run(configs, jobs=max(1, args.jobs), launcher=args.launcher, slurm=dict(args.slurm))
    for path in paths:
        print(path)
    for failure in failures:
        print(f"ssl-bench: failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def cmd_list(args) -> int:
    from ssl_bench.registry import KINDS, Registry

    registry = Registry.discover(args.plugin)
    rows = [(kind, name, e.plugin.name, e.plugin.source, e.plugin.version)
            for kind in KINDS for name, e in sorted(registry.entries[kind].items())]
    _table(("kind", "name", "plugin", "source", "version"), rows)
    broken = [p for p in registry.plugins.values() if p.error]
    if broken:
        print("\nbroken plugins (skipped):")
        for p in broken:
            print(f"  {p.name} ({p.source}): {p.error}")
    print("\nprotocols: " + ", ".join(protocols.shipped()))
    return 0


def cmd_show(args) -> int:
    from ssl_bench.results import Result

    r = Result(args.result)
    a = r.attrs
    print(f"{args.result}")
    print(f"  protocol   {a['protocol']} v{a['protocol_version']} ({a['protocol_hash'][:12]})")
    print(f"  run        method={a['method']} stream={a['stream']} strategy={a['strategy']} seed={a['seed']}")
    print(f"  made with  ssl-bench {a['ssl_bench_version']}, torch {a['torch_version']}, {a['device']}, "
          f"commit {a.get('git_commit') or 'unknown'}, {a.get('seconds', '?')} s, {a.get('steps', '?')} steps")
    for key, value in sorted(r.summary.items()):
        print(f"  {key:<24} {value:.4f}" if isinstance(value, float) else f"  {key:<24} {value}")
    acc = r.acc_matrix
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in r.get("phases/names", [])]
    print("\n  accuracy matrix (row: after phase, column: evaluated on experience)")
    header = "  " + " " * 22 + "".join(f"{'exp ' + str(j):>8}" for j in range(acc.shape[1]))
    print(header)
    print("  " + f"{'init':<22}" + "".join(f"{v:8.3f}" for v in r["metrics/acc_init"]))
    for i, row in enumerate(acc):
        label = names[i] if i < len(names) else str(i)
        print("  " + f"{label[:22]:<22}" + "".join(f"{v:8.3f}" for v in row))
    others = sorted(k for k in r.arrays if k.startswith(("metrics/", "end/")) and k not in ("metrics/acc_matrix", "metrics/acc_init"))
    if others:
        print("\n  stored metrics: " + ", ".join(f"{k} {tuple(np.shape(r[k]))}" for k in others))
    return 0


def cmd_leaderboard(args) -> int:
    from ssl_bench import leaderboard

    print(leaderboard.markdown(leaderboard.collect(args.results)), end="")
    return 0


def _table(header, rows) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "list": cmd_list, "show": cmd_show, "leaderboard": cmd_leaderboard}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug, args.quiet = getattr(args, "debug", False), getattr(args, "quiet", False)  # flags go before or after COMMAND
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="ssl-bench: %(message)s", stream=sys.stderr)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            return COMMANDS[args.command](args)
    except UserError as err:
        if args.debug:
            raise
        print(f"ssl-bench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssl-bench: interrupted; run the same command again to resume from the last finished phase", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - turned into one line unless --debug
        if args.debug:
            raise
        from ssl_bench.registry import plugin_of_exception

        where = plugin_of_exception(err)
        origin = f" in {where}" if where else ""
        print(f"ssl-bench: error{origin}: {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
