"""Forgetting check (issue 5): does sequential training forget on a domain-incremental stream, and do replay and MAS reduce it?

Runs the ``forgetting`` protocol (generated shapes, three far-apart domains one after another)
with sequential training, replay, MAS and joint training (the compute-matched upper bound),
for SimCLR and, for contrast, the supervised baseline; then prints the accuracy matrices and
the forgetting numbers (``ssl_bench.results.continual``) as markdown, and draws the matrices.

    python benchmark/forgetting_check.py --out /tmp/forgetting [--seeds 0 1 (default)] [--only simclr]

Every run is an ordinary ``ssl-bench run``; its result file stays in ``--out`` (runs already
there are reused, so an interrupted check resumes). Sized for a 2-core CPU (a few minutes per run).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

from ssl_bench import results
from ssl_bench.cli import main as ssl_bench
from ssl_bench.protocol import load

PROTOCOL = "forgetting"
#: (label, method, strategy, options); method options size the supervised classifier to the 8 classes
RUNS = [
    ("simclr sequential", "simclr", "sequential", []),
    ("simclr replay", "simclr", "replay", ["size=240", "ratio=0.5"]),
    ("simclr mas", "simclr", "mas", ["lam=0.1"]),
    ("simclr joint", "simclr", "joint", []),
    ("supervised sequential", "supervised", "sequential", []),
    ("supervised replay", "supervised", "replay", ["size=240", "ratio=0.5"]),
    ("supervised mas", "supervised", "mas", ["lam=0.1"]),
]


def run_one(method, strategy, options, seed, out: Path) -> Path:
    done = out / results.result_name(load(PROTOCOL).label, method, "domain", strategy, seed)
    if done.is_file():  # reuse a finished run made with the same options
        got = {k: str(v) for k, v in results.Result(done).config["strategy_options"].items()}
        if got == dict(o.split("=", 1) for o in options):
            return done
    args = [
        "-q",
        "run",
        "--protocol",
        PROTOCOL,
        "--stream",
        "domain",
        "--method",
        method,
        "--strategy",
        strategy,
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]
    if method == "supervised":
        args += ["--method-opt", "n_classes=8"]
    for opt in options:
        args += ["--strategy-opt", opt]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = ssl_bench(args)
    if code != 0:
        raise SystemExit(f"ssl-bench {' '.join(args)} failed with status {code}")
    return Path(buf.getvalue().strip().splitlines()[-1])


def fmt_matrix(acc: np.ndarray) -> str:
    return " / ".join("[" + " ".join(f"{v:.2f}" for v in row) + "]" for row in acc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("forgetting-runs"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--only", help="run only the labels containing this text (e.g. simclr)")
    ap.add_argument("--plot", type=Path, default=None, help="write the accuracy matrices as a PNG here")
    args = ap.parse_args(argv)
    chosen = [r for r in RUNS if not args.only or args.only in r[0]]
    rows = []
    for label, method, strategy, options in chosen:
        accs, summaries, secs = [], [], 0.0
        for seed in args.seeds:
            t0 = time.time()
            r = results.Result(run_one(method, strategy, options, seed, args.out))
            secs += float(r.attrs["seconds"])
            accs.append(r.acc_matrix)
            summaries.append(r.summary)
            print(f"{label} seed {seed}: {time.time() - t0:.0f} s, acc {fmt_matrix(r.acc_matrix)}", file=sys.stderr, flush=True)
        rows.append((label, np.mean(accs, 0), summaries, secs))

    print(
        f"| run ({len(args.seeds)} seed(s): {', '.join(map(str, args.seeds))}) | accuracy matrix (rows: after phase i) "
        "| acc. on domain 0 when trained / at end | forgetting_max | final avg acc | train+eval s |"
    )
    print("|---|---|---|---|---|---|")
    for label, acc, summaries, secs in rows:

        def mean(k, ss=summaries):
            return np.mean([s[k] for s in ss]) if all(k in s for s in ss) else float("nan")

        first = f"{acc[0, 0]:.3f} / {acc[-1, 0]:.3f}" if len(acc) > 1 else "-"
        print(
            f"| {label} | {fmt_matrix(acc)} | {first} | {mean('forgetting_max'):.3f} | {mean('final_avg_acc'):.3f} | {secs:.0f} |"
        )
    if args.plot:
        plot(rows, args.plot)
    return 0


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows), 2.8), squeeze=False)
    for ax, (label, acc, _, _) in zip(axes[0], rows):
        ax.imshow(acc, vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(acc):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("domain evaluated")
        ax.set_ylabel("after phase")
        ax.set_xticks(range(acc.shape[1]))
        ax.set_yticks(range(acc.shape[0]))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
