"""``ssl-bench stream-export``: write a stream's split as a split file (reload it with ``--stream manifest``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_bench.commands import _common

HELP = "write a stream's split as a manifest file (reload it with --stream manifest)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help="manifest file to write (.json or .toml)")
    p.add_argument("--stream", help="stream name (default: the protocol's default)")
    p.add_argument("--seed", type=int, help="seed (default: the protocol's first seed)")
    _common.add_stream_opt(p)
    _common.add_plugin(p)
    _common.add_protocol(p)
    _common.add_data(p)


def main(args: argparse.Namespace) -> int:
    from ssl_bench import protocol
    from ssl_bench.blocks import splits
    from ssl_bench.engine import RunConfig, load_data, make_plan
    from ssl_bench.registry import Registry

    proto = protocol.load(args.protocol)
    registry = Registry.discover(args.plugin)
    stream = args.stream or registry.default_for("stream") or proto.defaults.stream
    _common.check_seed(args.seed)
    seed = proto.seeds[0] if args.seed is None else args.seed
    config = RunConfig(
        protocol=proto,
        method=proto.defaults.method,
        stream=stream,
        strategy=proto.defaults.strategy,
        seed=seed,
        out=Path("."),
        stream_options=dict(args.stream_opt),
        data_root=args.data_root,
        download=args.download,
        plugins=list(args.plugin),
        progress=not args.quiet,
    )
    dataset, experiences = load_data(make_plan(config, registry))  # every option checked before loading
    source = {"stream": stream, "seed": seed, "protocol": proto.label, "protocol_hash": proto.hash}
    print(splits.write(args.output, splits.describe(dataset, experiences, source)))
    return 0
