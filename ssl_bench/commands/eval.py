"""``ssl-bench eval``: a protocol's evaluators on saved backbone weights (:func:`ssl_bench.engine.standalone.evaluate`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ssl_bench.commands import _common

HELP = "run a protocol's evaluators on saved backbone weights (--save-backbone, or a state_dict)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", type=Path, metavar="WEIGHTS", help=".safetensors, or a torch.save'd state_dict (.pt/.pth)")
    _common.add_protocol(p)
    p.add_argument("--stream", help="stream name (default: the protocol's default)")
    p.add_argument(
        "--seed", type=int, help="seed of the stream and probes (default: the weights' run's, else the protocol's first)"
    )
    _common.add_plugin(p)
    _common.add_data(p)
    _common.add_device(p)
    p.add_argument("-o", "--output", type=Path, help="also write every measured value as JSON to this file")


def main(args: argparse.Namespace) -> int:
    from ssl_bench.engine import standalone

    _common.check_seed(args.seed)
    metrics, meta = standalone.evaluate(
        args.weights,
        args.protocol,
        stream=args.stream,
        seed=args.seed,
        data_root=args.data_root,
        download=args.download,
        device=args.device,
        plugins=args.plugin,
        progress=not args.quiet,
    )
    made = f"{meta['method']} / {meta['stream']} / {meta['strategy']}, seed {meta['seed']}" if "method" in meta else "no metadata"
    print(f"{args.weights} ({made}) under protocol {args.protocol}")
    numbers = {}
    for key, value in metrics.items():
        array = np.asarray(value)
        if array.dtype.kind not in "fiub" or array.ndim > 1:  # CKA features: not numbers to read
            continue
        numbers[key] = array.tolist()
        if array.size <= 64:  # a spectrum goes to -o only
            cells = "".join(f"{float(v):8.3f}" for v in np.atleast_1d(array))
            mean = f"   mean {float(array.mean()):.4f}" if array.ndim == 1 else ""
            print(f"  {key:<28}{cells}{mean}")
    if args.output is not None:
        doc = {"weights": str(args.weights), "protocol": args.protocol, "metadata": meta, "metrics": numbers}
        _common.write_output(args.output, json.dumps(doc, indent=1) + "\n")
    return 0
