"""What one evaluation point of a protocol costs: the backbone pass and each evaluator, in CPU seconds.

A run evaluates after initialisation and after every phase (``phase`` evaluators) and once at the end
(``end`` evaluators, e.g. sharpness), so with these numbers and the training steps' cost one can say
where a protocol's minutes go. The backbone is at random init (the cost does not depend on the weights,
up to the linear probe's L-BFGS iterations), or a trained one with ``--weights RUN.safetensors``.

    OMP_NUM_THREADS=1 python benchmark/eval_cost.py --protocol tinyimagenet-cpu \
        --data-root ../shared/data/tiny-imagenet-100

CPU seconds (``time.process_time``) are comparable on a busy machine; wall seconds are not.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ssl_bench import protocol as protocols
from ssl_bench.engine import RunConfig, evaluation, weights
from ssl_bench.engine.build import Run
from ssl_bench.plan import make_plan
from ssl_bench.registry import Registry


def timed(label: str, fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    print(f"| {label} | {time.process_time() - cpu:.1f} | {time.perf_counter() - wall:.1f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="smoke")
    ap.add_argument("--data-root")
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--stream")
    ap.add_argument("--weights", type=Path, help="a saved backbone (--save-backbone) instead of random init")
    args = ap.parse_args()
    proto = protocols.load(args.protocol)
    with tempfile.TemporaryDirectory() as out:
        config = RunConfig(
            protocol=proto,
            method=args.method,
            stream=args.stream or proto.defaults.stream,
            strategy="sequential",
            seed=0,
            out=Path(out),
            data_root=args.data_root,
            progress=False,
        )
        run = Run(make_plan(config, Registry.discover([])))
        if args.weights:
            weights.load_into(run.method.backbone, weights.read(args.weights)[0], args.weights)
        print(f"{proto.label}, {args.method}: one evaluation point\n\n| part | CPU s | wall s |\n|---|---:|---:|")
        feats = timed("features (backbone pass)", lambda: evaluation.features(run))
        for ev in run.evaluators:
            timed(f"`{ev.name}` ({ev.when})", lambda ev=ev: ev.evaluate(run, feats, feats if ev.when == "phase" else None))


if __name__ == "__main__":
    main()
