"""Does a longer budget or a wider model make a non-contrastive method learn? The budget curve of issue 33, item 6.

Not a test: it reads result files of joint runs (one experience: the whole training set) made under
tinyimagenet-cpu (1x the v1 steps), its budget twins tinyimagenet-cpu-steps2, -steps4 and -steps6 (2x, 4x, 6x the
steps, the warm-up at the same share) and its width twin ``tinyimagenet-cpu-w050`` (ResNet-18 x0.5),
and prints one row per run: the linear probe's and the kNN's final accuracy minus the same run's random init
(``metrics/linear/acc`` and ``metrics/knn/acc`` against ``init/...``, mean over the held-out sets of the four
experiences), the collapse AUC (higher: more collapsed; about 0.5 for a flat spectrum, 1 for one direction),
PACS transfer (photo probe, 5-shot over the four domains) and the cost. Everything is read from the files; nothing is re-measured.

The cost of a *sequential* run under a configuration, against a v1 run of the same method (the issue's "no more
than 3x the v1 cost per run, after the evaluation speed-up"): training seconds of this run (a joint run trains
the sequential run's total steps) plus a v3 evaluation of a sequential run, over the 1x run's training seconds
plus a v1 evaluation. The two evaluation costs are CPU seconds measured in one sitting at one thread
(benchmark/RESULTS.md, "Evaluation cost, v3": 121.8 and 397.0); a wider model's evaluation is scaled by its
run's evaluation seconds over the 1x run's.

    python benchmark/budget_curve.py leaderboard/results/tinyimagenet-cpu-{v3,steps?-v1,w050-v2}/*/*joint* \\
        --json benchmark/budget_curve.json --plot benchmark/budget_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ssl_bench.results.file import Result

EVAL_V3, EVAL_V1 = 121.8, 397.0  #: CPU s of a sequential run's evaluation, v3 and v1 (RESULTS.md, one sitting)


def _last(r: Result, key: str) -> float:
    """The mean over experiences of the last phase's row of a per-phase metric (one row per phase)."""
    return float(np.mean(np.asarray(r[key], dtype=float)[-1]))


def _seconds(r: Result, group: str) -> float:
    keys = [k for k in r.shapes if k.startswith(f"cost/{group}/")]
    return float(sum(np.sum(r[k]) for k in keys))


def row(r: Result) -> dict:
    p = json.loads(r["protocol_json"])
    width = float(p["backbone"]["options"]["width"])
    out = {
        "file": r.path.name,
        "method": r.attrs["method"],
        "protocol": p["name"],
        "seed": int(r.attrs["seed"]),
        "width": width,
        "steps": int(r.attrs["steps"]),
        "train_s": float(np.sum(r["cost/train_seconds"])),
        "eval_s": _seconds(r, "eval_seconds") + _seconds(r, "end_seconds"),
        "run_s": float(r.attrs["seconds"]),
    }
    for name in ("linear", "knn"):
        out[f"{name}_acc"], out[f"{name}_init"] = _last(r, f"metrics/{name}/acc"), float(np.mean(r[f"init/{name}/acc"]))
        out[f"{name}_gain"] = out[f"{name}_acc"] - out[f"{name}_init"]
    out["auc"], out["auc_init"] = _last(r, "metrics/collapse/auc"), float(np.asarray(r["init/collapse/auc"]))
    for key, label in (("end/downstream/pacs_photo/acc", "pacs_photo"), ("end/downstream/pacs/acc_5shot", "pacs_5shot")):
        if key in r.shapes:
            out[label] = float(np.asarray(r[key]))
    return out


def add_cost(rows: list[dict]) -> None:
    """``cost_x_v1``: a sequential run's cost under the row's configuration over a v1 run's (module docstring)."""
    base = {(x["method"], x["seed"]): x for x in rows if x["width"] == 0.25 and x["protocol"] == "tinyimagenet-cpu"}
    for x in rows:  # the same seed's 1x run, else any 1x run of the method
        ref = base.get((x["method"], x["seed"])) or next((b for b in base.values() if b["method"] == x["method"]), None)
        if ref is None:
            continue
        evaluation = EVAL_V3 * x["eval_s"] / ref["eval_s"]
        x["cost_x_v1"] = (x["train_s"] + evaluation) / (ref["train_s"] + EVAL_V1)


def table(rows: list[dict]) -> str:
    head = (
        "| method | protocol | width | steps | seed | probe % (init) | probe gain | kNN gain | collapse AUC (init) "
        "| PACS photo % | PACS 5-shot % | train min | run min | cost x v1 |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for x in sorted(rows, key=lambda x: (x["method"], x["width"], x["steps"], x["seed"])):
        cost = f"{x['cost_x_v1']:.2f}" if "cost_x_v1" in x else "-"
        lines.append(
            f"| {x['method']} | {x['protocol']} | x{x['width']:g} | {x['steps']} | {x['seed']} "
            f"| {100 * x['linear_acc']:.2f} ({100 * x['linear_init']:.2f}) | {100 * x['linear_gain']:+.2f} "
            f"| {100 * x['knn_gain']:+.2f} | {x['auc']:.3f} ({x['auc_init']:.3f}) "
            f"| {100 * x.get('pacs_photo', float('nan')):.1f} | {100 * x.get('pacs_5shot', float('nan')):.1f} "
            f"| {x['train_s'] / 60:.1f} | {x['run_s'] / 60:.1f} | {cost} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("linear_gain", "probe gain over init (points)", 100), ("knn_gain", "kNN gain over init (points)", 100))
    panels += (("auc", "collapse AUC (higher: more collapsed)", 1),)
    for colour, method in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], sorted({x["method"] for x in rows})):
        mine = [x for x in rows if x["method"] == method]
        for ax, (key, label, scale) in zip(axes, panels):
            for width, marker, fill in ((0.25, "o", colour), (0.5, "s", "none")):
                pts = [(x["steps"], x[key] * scale) for x in mine if x["width"] == width]
                if not pts:
                    continue
                ax.scatter(*zip(*pts), marker=marker, color=colour, facecolors=fill, label=f"{method} x{width:g}")
                steps = sorted({s for s, _ in pts})  # the line joins the means over seeds
                ax.plot(steps, [np.mean([y for s, y in pts if s == t]) for t in steps], color=colour, lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("training steps (joint, one experience)")
            ax.set_ylabel(label)
    for ax in axes[:2]:
        ax.axhline(0, color="grey", lw=0.8)
    axes[0].axhline(3, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--plot", type=Path, help="also draw the curve (PNG) here")
    args = ap.parse_args(argv)
    rows = [row(Result(f)) for f in args.files]
    add_cost(rows)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.plot:
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
