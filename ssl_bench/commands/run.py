"""``ssl-bench run``: train and evaluate one run under a protocol, write its result file.

A configuration whose result file exists already is skipped with one line naming the file (as ``sweep`` skips
finished runs); ``--restart`` trains it again from scratch. What a run writes depends on its configuration only.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ssl_bench.commands import _common

HELP = "train and evaluate one run under a protocol, write a result file (a finished one is skipped)"
log = logging.getLogger("ssl_bench")


def add_arguments(p: argparse.ArgumentParser) -> None:
    _common.add_run_options(p)
    p.add_argument("--method", help="method name (default: the --plugin's only method, else the protocol's default)")
    p.add_argument("--stream", help="stream name (default: the protocol's default)")
    p.add_argument("--strategy", help="strategy name, or several joined by '+' (default: the protocol's default)")
    p.add_argument(
        "--seed",
        type=int,
        help="seed (default: the protocol's first seed); any seed from 0 to 2**32-1 runs (e.g. more seeds for an "
        "inconclusive claim), but the leaderboard takes only the protocol's seeds",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="train from scratch: even when the result file exists (default: skip it), and ignoring a checkpoint left by an "
        "interrupted run (default: resume)",
    )
    p.add_argument(
        "--wait", action="store_true", help="when another process runs this configuration on --out, wait for it (default: exit 2)"
    )


def finished(config, registry) -> Path | None:
    """The result file of ``config`` when it exists and holds this very configuration (same protocol hash and run
    identity), else None; a file there of another protocol hash or identity is a UserError (it would be overwritten)."""
    from ssl_bench import results
    from ssl_bench.errors import UserError
    from ssl_bench.plan import make_plan

    make_plan(config, registry)  # resolves the recipe, which a variant's file name carries
    path = config.result_path
    if not path.exists():
        return None
    try:
        a = results.Result(path).attrs
    except UserError as err:
        raise UserError(f"{err}; --restart replaces it with a new run of this configuration") from None
    if a.get("protocol_hash") != config.protocol.hash or str(a.get("run_identity")) != config.identity:
        raise UserError(
            f"'{path}' holds a run of another configuration (protocol hash {str(a.get('protocol_hash'))[:12]}, identity "
            f"{a.get('run_identity')}; this one: {config.protocol.hash[:12]}, {config.identity}): choose another --out, "
            "or --restart to replace it"
        )
    return path


def main(args: argparse.Namespace) -> int:
    from ssl_bench import protocol
    from ssl_bench.engine import execute, record
    from ssl_bench.engine.launch import cores
    from ssl_bench.registry import Registry

    if "OMP_NUM_THREADS" not in os.environ:  # the cores this process may use (taskset, cgroups), not the machine's
        import torch

        torch.set_num_threads(cores())
    proto = protocol.load(args.protocol)
    record.check_writable(args.out, keep=False)  # before the plugins: a file-size limit of 0 breaks their imports, not one line
    registry = Registry.discover(args.plugin)
    config = _common.run_config(
        args, registry, proto, method=args.method, stream=args.stream, strategy=args.strategy, seed=args.seed
    )
    if not args.restart:
        done = finished(config, registry)
        if done is not None:
            log.warning("skipped: %s holds this configuration's result already (--restart retrains it)", done)
            print(done)
            return 0
    path = execute(config, registry, resume=not args.restart, wait=args.wait)
    if path is not None:  # None on the other ranks under torchrun
        print(path)
    return 0
