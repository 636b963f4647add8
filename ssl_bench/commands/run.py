"""``ssl-bench run``: train and evaluate one run under a protocol, write its result file."""

from __future__ import annotations

import argparse
import os

from ssl_bench.commands import _common

HELP = "train and evaluate one run under a protocol, write a result file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    _common.add_run_options(p)
    p.add_argument("--method", help="method name (default: the --plugin's only method, else the protocol's default)")
    p.add_argument("--stream", help="stream name (default: the protocol's default)")
    p.add_argument("--strategy", help="strategy name, or several joined by '+' (default: the protocol's default)")
    p.add_argument("--seed", type=int, help="seed (default: the protocol's first seed)")
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint left by an interrupted run")
    p.add_argument(
        "--wait", action="store_true", help="when another process runs this configuration on --out, wait for it (default: exit 2)"
    )


def main(args: argparse.Namespace) -> int:
    from ssl_bench import protocol
    from ssl_bench.engine import execute
    from ssl_bench.engine.launch import cores
    from ssl_bench.registry import Registry

    if "OMP_NUM_THREADS" not in os.environ:  # the cores this process may use (taskset, cgroups), not the machine's
        import torch

        torch.set_num_threads(cores())
    proto = protocol.load(args.protocol)
    registry = Registry.discover(args.plugin)
    config = _common.run_config(
        args, registry, proto, method=args.method, stream=args.stream, strategy=args.strategy, seed=args.seed
    )
    path = execute(config, registry, resume=not args.restart, wait=args.wait)
    if path is not None:  # None on the other ranks under torchrun
        print(path)
    return 0
