"""Issue 34's probe-equality check: the linear probe of saved backbones under the old and the new evaluation.

For each ``.safetensors`` (written by ``ssl-bench run --save-backbone``), the final backbone's linear-probe
accuracy on every experience is computed twice, as ``ssl-bench eval`` computes it, under two of the configurations
in ``probe_equality/`` (``--pair A B``):

- ``old``: float32 features from NCHW inputs, the float64 L-BFGS with autograd (v2 before issue 34);
- ``new``: channels_last inputs, the float32 L-BFGS: tinyimagenet-cpu v2 as shipped;
- ``v2-bf16``: ``new`` with bf16 features, the L2 still chosen by held-out accuracy;
- ``v3-fp32``: tinyimagenet-cpu v3's probe (L2 chosen by held-out cross-entropy) on float32 features;
- ``v3``: tinyimagenet-cpu v3 as shipped (bf16 features).

All extend tinyimagenet-cpu (v2 or v3), so data, probe split and L2 grid are the run's. Prints one markdown row
per backbone (largest |difference| over its experiences, in points, and whether the chosen L2 moved) and the
totals; exit 1 when any accuracy moved by more than 0.3 points, the issue's bound for keeping the evaluator's
version.

    OMP_NUM_THREADS=1 python benchmark/probe_equality.py RUNS/*.safetensors --data-root DIR/tiny-imagenet-100 \
        [--pair v3-fp32 v3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ssl_bench.engine import standalone

HERE = Path(__file__).parent / "probe_equality"
BOUND = 0.003  # 0.3 points


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+", type=Path)
    ap.add_argument("--data-root", required=True)
    configs = sorted(p.stem for p in HERE.glob("*.toml"))
    ap.add_argument("--pair", nargs=2, default=["old", "new"], choices=configs, metavar="CONFIG", help=", ".join(configs))
    args = ap.parse_args()
    a, b = args.pair
    print(f"| backbone | {a} acc % (mean) | {b} acc % (mean) | max abs diff (points) | L2 moved | {a} s | {b} s |")
    print("|---|---:|---:|---:|---|---:|---:|")
    worst, seconds = 0.0, [0.0, 0.0]
    for path in args.weights:
        got, took = [], [0.0, 0.0]
        for k, name in enumerate(args.pair):
            start = time.process_time()
            metrics, meta = standalone.evaluate(path, str(HERE / f"{name}.toml"), stream=None, data_root=args.data_root)
            took[k] = time.process_time() - start
            seconds[k] += took[k]
            got.append((np.asarray(metrics["linear/acc"], dtype=float), np.asarray(metrics["linear/l2"], dtype=float)))
        (acc_old, l2_old), (acc_new, l2_new) = got
        diff = float(np.abs(acc_old - acc_new).max())
        worst = max(worst, diff)
        moved = "yes" if not np.array_equal(l2_old, l2_new) else "no"
        print(
            f"| {path.stem} | {100 * acc_old.mean():.2f} | {100 * acc_new.mean():.2f} | {100 * diff:.2f} | {moved} | "
            f"{took[0]:.0f} | {took[1]:.0f} |",
            flush=True,
        )
    verdict = "within" if worst <= BOUND else "BEYOND"
    print(
        f"\n{len(args.weights)} backbones: largest |difference| {100 * worst:.2f} points ({verdict} the 0.3-point bound); "
        f"CPU seconds in all: {a} {seconds[0]:.0f}, {b} {seconds[1]:.0f}"
    )
    return 0 if worst <= BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
