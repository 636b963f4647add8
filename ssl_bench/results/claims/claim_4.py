"""Claims 4a-4c (Li, Efros, Pathak 2022): collapse predicts accuracy; continual and hybrid training collapse
less than multi-epoch training."""

from __future__ import annotations

import numpy as np

from ssl_bench.results.claims.base import (
    MIN_SEEDS,
    NOT_TESTABLE,
    SUPERVISED,
    Figures,
    Finding,
    Index,
    RunFile,
    acc,
    auc,
    mark,
    num,
    pm,
    spearman,
    stat,
    table,
    verdict_of,
)

MIN_CORR_RUNS = 6  #: claim 4a: runs needed for a rank correlation
MAX_RHO = -0.5  #: claim 4a: "predicts" = Spearman rho at most -0.5 (more collapsed, less accurate)

SECTION = ("4", "Collapse")
CLAIMS = {
    "4a": "The collapse AUC predicts linear-probe accuracy across runs (Li, Efros, Pathak 2022).",
    "4b": "Continual training collapses less than multi-epoch training at equal compute (Li, Efros, Pathak 2022).",
    "4c": "A hybrid of continual and multi-epoch training collapses less than multi-epoch training (Li, Efros, Pathak 2022).",
}
RULES = {
    "4a": (
        "Spearman rank correlation between the collapse AUC after the last phase and the final accuracy, over the "
        "SSL runs of one stream (a stream sets the probes' task: accuracies compare only within it); reproduced if "
        f"rho <= {MAX_RHO} on every stream with at least {MIN_CORR_RUNS} runs of at least 2 methods."
    ),
    "4b": (
        "for every SSL method and stream with sequential and joint runs (joint has the sequential run's total "
        "steps), the difference AUC(joint) - AUC(sequential); reproduced if it is positive on average and in more "
        "than half of the pairs."
    ),
    "4c": (
        "for every SSL method and stream with hybrid and joint runs (hybrid: compute-matched by default), "
        "AUC(joint) - AUC(hybrid); reproduced if it is positive on average and in more than half of the pairs."
    ),
}


SCOPES = "each"


def judge(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    return claim4(ix, scope, figures)


def claim4(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    # 4a: rank correlation over the runs of each stream
    a = Finding("4a", scope, NOT_TESTABLE)
    ssl = [r for r in ix.runs if r.scope == scope and r.attrs["method"] != SUPERVISED and "collapse_auc" in r.numbers]
    checks, constant = [], []
    for stream in ix.streams(scope):
        points = [r for r in ssl if r.attrs["stream"] == stream]
        if not points:
            continue
        x = [r.numbers["collapse_auc"] for r in points]
        y = [r.numbers["final_avg_acc"] for r in points]
        rho, methods = spearman(x, y), sorted({r.attrs["method"] for r in points})
        a.runs += points
        a.lines.append(
            f"- {stream}: Spearman rho = {rho:.3f} over {len(points)} runs of {', '.join(methods)}; collapse AUC "
            f"{min(x):.3f} to {max(x):.3f}, final accuracy {num(min(y))} to {num(max(y))} %"
        )
        if len(points) >= MIN_CORR_RUNS and len(methods) >= 2:
            if np.isfinite(rho):
                checks.append(rho <= MAX_RHO)
                a.lines[-1] += f"; rho <= {MAX_RHO}: {mark(rho <= MAX_RHO)}"
            else:
                constant.append(stream)
    if checks:
        a.verdict = verdict_of(checks)
    elif constant:
        a.missing.append(f"runs whose collapse AUC or accuracy differ (all equal on {', '.join(constant)})")
    if ssl and figures:
        a.lines += ["", scatter_figure(figures, scope, ssl)]
    if a.verdict == NOT_TESTABLE and not a.missing:
        a.missing.append(
            f"at least {MIN_CORR_RUNS} SSL runs of at least 2 methods on one stream, with the `collapse` evaluator "
            f"(here: {len(ssl)} runs, {len({r.attrs['method'] for r in ssl})} method(s))"
        )
        a.to_run = max(MIN_CORR_RUNS - len(ssl), ix.target_seeds(scope))
    return [a, _collapse_pairs(ix, scope, "4b", "sequential"), _collapse_pairs(ix, scope, "4c", "hybrid")]


def _collapse_pairs(ix: Index, scope: str, claim: str, other: str) -> Finding:
    """AUC(joint) - AUC(other) per SSL method and stream."""
    f = Finding(claim, scope, NOT_TESTABLE)
    rows, diffs = [], []
    for method in ix.methods(scope, ssl_only=True):
        for stream in ix.streams(scope):
            pair = ix.paired(scope, method, stream, other, "joint")
            if pair is None:
                if ix.get(scope, method, stream, other) or (other == "hybrid" and ix.get(scope, method, stream, "joint")):
                    for strategy in (other, "joint"):
                        if len(ix.get(scope, method, stream, strategy)) < MIN_SEEDS:
                            text, n = ix.need(scope, method, stream, strategy)
                            f.missing.append(text)
                            f.to_run += n
                continue
            a_other, a_joint = auc(pair[other]), auc(pair["joint"])
            if a_other is None or a_joint is None:
                f.missing.append(f"the `collapse` evaluator in {method}/{stream}/{other} and joint runs")
                continue
            d = [j - o for o, j in zip(a_other, a_joint)]
            diffs.append(stat(d)[0])
            f.runs += pair[other] + pair["joint"]
            rows.append(
                [
                    method,
                    stream,
                    str(len(d)),
                    pm(a_other, 1, 3),
                    pm(a_joint, 1, 3),
                    pm(d, 1, 3),
                    pm(acc(pair[other])),
                    pm(acc(pair["joint"])),
                ]
            )
    if rows:
        f.lines += table(
            ["method", "stream", "seeds", f"AUC {other}", "AUC joint", f"AUC joint - {other}", f"{other} acc %", "joint acc %"],
            rows,
        )
    if diffs:
        mean, lower = float(np.mean(diffs)), sum(d > 0 for d in diffs)
        ok = mean > 0 and lower > len(diffs) / 2
        f.verdict, f.missing, f.to_run = verdict_of([ok]), [], 0
        f.lines.append(
            f"\n- mean AUC joint - {other} {mean:.3f} > 0 and {other} lower in {lower} of {len(diffs)} "
            f"pairs (more than half): {mark(ok)}"
        )
    elif not f.missing:
        f.missing.append(
            f"{other} and joint runs of an SSL method on one stream, with the `collapse` evaluator "
            f"({ix.target_seeds(scope)} seeds each)"
        )
        f.to_run = 2 * ix.target_seeds(scope)
    return f


def scatter_figure(figures: Figures, scope: str, points: list[RunFile]) -> str:
    import matplotlib.pyplot as plt

    streams = list(dict.fromkeys(r.attrs["stream"] for r in points))  # one panel each: accuracies differ by task
    fig, axes = plt.subplots(1, len(streams), figsize=(4.2 * len(streams), 3.8), layout="constrained", squeeze=False)
    for ax, stream in zip(axes[0], streams, strict=True):
        for method in sorted({r.attrs["method"] for r in points}):  # every method in every panel: same colours
            mine = [r for r in points if r.attrs["method"] == method and r.attrs["stream"] == stream]
            ax.scatter(
                [r.numbers["collapse_auc"] for r in mine],
                [100 * r.numbers["final_avg_acc"] for r in mine],
                label=method if mine else None,
                s=18,
            )
        ax.set_title(f"{stream} stream", fontsize=9)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("final accuracy %")
    fig.supxlabel("collapse AUC after the last phase (higher = more collapsed)", fontsize=9)
    fig.suptitle(f"Collapse vs accuracy, {scope}", fontsize=9)
    return figures.save(fig, figures.name("claim4_collapse", scope), f"collapse AUC vs accuracy, {scope}")
