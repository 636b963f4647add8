"""Claims 4a-4c (Li, Efros, Pathak 2022): collapse predicts accuracy; continual and hybrid training collapse
less than multi-epoch training, and the hybrid is more accurate.

4a is judged *within* each method: pooled over methods, a rank correlation mostly separates a method that learns
(low AUC, high accuracy) from one that does not, which says nothing about whether collapse predicts accuracy. Every
phase of every run stores its collapse AUC (``metrics/collapse/auc``) and its row of the accuracy matrix, so each
method has many (AUC, accuracy) points; their ranks are taken within the method, centred and pooled (Spearman's
rho with the method partialled out, :func:`base.within_rank_correlation`), and the 95% interval is a cluster
bootstrap over runs (the phases of one run are not independent). Li et al. correlate their AUC with linear-probe
accuracy over models of one method family trained under different settings; a run's phases are such models here.
4b and 4c are paired by seed with 95% t-intervals.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ssl_bench.results.claims.base import (
    MIN_SEEDS,
    NOT_TESTABLE,
    STREAMS,
    SUPERVISED,
    Check,
    Figures,
    Finding,
    Index,
    RunFile,
    acc,
    auc,
    gate,
    paired,
    pm,
    spearman,
    table,
    within_rank_correlation_interval,
)

MIN_CORR_RUNS = 6  #: claim 4a: runs (of methods with at least 2 runs each) a stream needs for a correlation
#: claim 4a: "predicts" = the within-method rank correlation of AUC and accuracy has its interval below 0 (more
#: collapsed, less accurate); its size depends on how far apart the sweep's runs are, which the paper does not fix
MAX_RHO = 0.0
LESS_AUC = 0.0  #: claims 4b, 4c: "collapses less" = the AUC difference, seed by seed, has its interval above 0
MORE_ACC = 0.0  #: claim 4c: "more accurate" = hybrid - other accuracy, seed by seed, has its interval above 0

SECTION = ("4", "Collapse")
CLAIMS = {
    "4a": "The collapse AUC predicts linear-probe accuracy: more collapsed, less accurate (Li, Efros, Pathak 2022).",
    "4b": "Continual training collapses less than multi-epoch training at equal compute (Li, Efros, Pathak 2022).",
    "4c": "A hybrid of continual and multi-epoch training collapses less than multi-epoch training and improves "
    "linear-probe accuracy (by up to 18 points in the paper) over both continual and multi-epoch training "
    "(Li, Efros, Pathak 2022).",
}
RULES = {
    "4a": (
        "per stream (a stream sets the probes' task: accuracies compare only within it), over the SSL methods that "
        "learned there (gain over random init at least 2 points, interval above 0) with at least 2 runs each and "
        f"at least {MIN_CORR_RUNS} runs in all: every phase of every run is a point (its collapse AUC, its mean "
        "row of the accuracy matrix); the rank correlation within methods (ranks centred per method, pooled) has "
        f"its 95% cluster-bootstrap interval (runs resampled within methods) below {MAX_RHO:.0f} (reproduced) or "
        "above it (contradicted). Combined over streams: contradicted if any is, reproduced if all are, otherwise "
        "inconclusive. The pooled rho over methods is shown but decides nothing."
    ),
    "4b": (
        "for every SSL method that learned and stream with sequential and joint runs (joint has the sequential "
        "run's total steps): AUC(joint) - AUC(sequential), seed by seed, has its 95% interval above "
        f"{LESS_AUC:.0f} (reproduced) or below it (contradicted). Combined over methods and streams: contradicted "
        "if any is, reproduced if all are, otherwise inconclusive."
    ),
    "4c": (
        "for every SSL method that learned and stream with hybrid, sequential and joint runs (hybrid: "
        "compute-matched by default), seed by seed with 95% intervals: AUC(joint) - AUC(hybrid) above "
        f"{LESS_AUC:.0f}, accuracy hybrid - joint above {MORE_ACC * 100:.0f} points and hybrid - sequential above "
        f"{MORE_ACC * 100:.0f} points (each: reproduced when wholly above, contradicted when wholly below). "
        "Combined over the three items, methods and streams: contradicted if any is, reproduced if all are, "
        "otherwise inconclusive."
    ),
}


SCOPES = "each"


def judge(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    return claim4(ix, scope, figures)


def phase_points(r: RunFile) -> list[tuple[float, float]]:
    """(collapse AUC, mean accuracy over experiences) after every phase of ``r``."""
    aucs = np.asarray(r.arrays.get("metrics/collapse/auc", []), dtype=float).reshape(-1)
    matrix = np.asarray(r.arrays["metrics/acc_matrix"], dtype=float)
    if len(aucs) != len(matrix):
        return []
    return [(float(a), float(row.mean())) for a, row in zip(aucs, matrix)]


def claim4(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    a = Finding("4a", scope, NOT_TESTABLE)
    ssl = [r for r in ix.runs if r.scope == scope and r.attrs["method"] != SUPERVISED and phase_points(r)]
    for stream in ix.streams(scope):
        mine = [r for r in ssl if r.attrs["stream"] == stream]
        if not mine:
            continue
        a.runs += mine
        methods = sorted({r.attrs["method"] for r in mine})
        taking, per_method = [], []
        for method in methods:
            runs = [r for r in mine if r.attrs["method"] == method]
            points = [(method, r.rel, x, y) for r in runs for x, y in phase_points(r)]
            rho = spearman([p[2] for p in points], [p[3] for p in points]) if len(points) > 2 else float("nan")
            per_method.append(f"{method} {rho:+.2f} ({len(runs)} runs, {len(points)} points)")
            why = gate(method, f"the {stream} stream", runs)
            if why:
                a.why.append(why)
            elif len(runs) >= 2:
                taking.append((method, runs, points))
        final = [(r.numbers["collapse_auc"], r.numbers["final_avg_acc"]) for r in mine if "collapse_auc" in r.numbers]
        pooled = spearman([x for x, _ in final], [y for _, y in final]) if len(final) > 2 else float("nan")
        a.lines.append(
            f"- {stream}: pooled over methods (final phase, decides nothing) rho = {pooled:.3f} over {len(final)} runs; "
            f"per method over runs and phases: {', '.join(per_method)}"
        )
        n_runs = sum(len(runs) for _, runs, _ in taking)
        if n_runs < MIN_CORR_RUNS:
            a.missing.append(
                f"{stream}: at least {MIN_CORR_RUNS} runs of SSL methods that learned, with at least 2 runs each and "
                f"the `collapse` evaluator (here: {n_runs})"
            )
            a.to_run += MIN_CORR_RUNS - n_runs
            continue
        iv = within_rank_correlation_interval([p for _, _, points in taking for p in points])
        what = f"{stream}: within-method rank correlation of collapse AUC and accuracy ({', '.join(m for m, _, _ in taking)})"
        a.checks.append(Check(what, iv, MAX_RHO, above=False, scale=1.0, digits=3, unit=""))
    if ssl and figures:
        a.lines += ["", scatter_figure(figures, scope, ssl)]
    a.judge()
    if a.verdict == NOT_TESTABLE and not a.missing and not a.why:
        a.missing.append(f"SSL runs with the `collapse` evaluator ({MIN_CORR_RUNS} of methods that learn on one stream)")
        a.to_run = MIN_CORR_RUNS
    return [a, collapse_pairs(ix, scope), hybrid(ix, scope)]


def _learners(
    ix: Index, scope: str, f: Finding, strategies: tuple[str, ...]
) -> Iterator[tuple[str, str, dict[str, list[RunFile]]]]:
    """(method, stream, groups on common seeds) for every SSL method that learned in those groups; the others go
    into ``f.why``, incomplete groups into ``f.missing``."""
    for method in ix.methods(scope, ssl_only=True):
        for stream in ix.streams(scope):
            groups = ix.paired(scope, method, stream, *strategies)
            if groups is None:
                if ix.get(scope, method, stream, strategies[0]):
                    for strategy in strategies:
                        if len(ix.get(scope, method, stream, strategy)) < MIN_SEEDS:
                            text, n = ix.need(scope, method, stream, strategy)
                            f.missing.append(text)
                            f.to_run += n
                continue
            if any(auc(g) is None for g in groups.values()):
                f.missing.append(f"the `collapse` evaluator in {method}/{stream} runs ({', '.join(strategies)})")
                continue
            why = gate(method, f"the {stream} stream", [r for g in groups.values() for r in g])
            if why:
                f.why.append(why)
                continue
            f.runs += [r for g in groups.values() for r in g]
            yield method, stream, groups


def collapse_pairs(ix: Index, scope: str) -> Finding:
    """4b: AUC(joint) - AUC(sequential) per SSL method and stream."""
    f = Finding("4b", scope, NOT_TESTABLE)
    rows = []
    for method, stream, g in _learners(ix, scope, f, ("sequential", "joint")):
        a_seq, a_joint = auc(g["sequential"]) or [], auc(g["joint"]) or []
        d = paired(a_seq, a_joint)
        what = f"{method}/{stream}: AUC joint - sequential"
        f.checks.append(Check(what, d, LESS_AUC, above=True, scale=1.0, digits=3, unit=""))
        rows.append(
            [method, stream, str(len(a_seq)), pm(a_seq, 1, 3), pm(a_joint, 1, 3), pm(acc(g["sequential"])), pm(acc(g["joint"]))]
        )
    if rows:
        f.lines += table(
            ["method", "stream", "seeds", "AUC sequential", "AUC joint", "sequential acc %", "joint acc %"],
            rows,
        )
    f.judge()
    if f.verdict == NOT_TESTABLE and not f.missing and not f.why:
        f.missing.append(
            f"sequential and joint runs of an SSL method on one stream, with the `collapse` evaluator "
            f"({ix.target_seeds(scope)} seeds each)"
        )
        f.to_run = 2 * ix.target_seeds(scope)
    return f


def hybrid(ix: Index, scope: str) -> Finding:
    """4c: the hybrid against joint (AUC and accuracy) and sequential (accuracy) per SSL method and stream."""
    f = Finding("4c", scope, NOT_TESTABLE)
    rows = []
    for method, stream, g in _learners(ix, scope, f, ("hybrid", "sequential", "joint")):
        a = {k: auc(v) or [] for k, v in g.items()}
        y = {k: acc(v) for k, v in g.items()}
        where = f"{method}/{stream}"
        f.checks += [
            Check(f"{where}: AUC joint - hybrid", paired(a["hybrid"], a["joint"]), LESS_AUC, True, scale=1.0, digits=3, unit=""),
            Check(f"{where}: accuracy hybrid - joint", paired(y["joint"], y["hybrid"]), MORE_ACC, above=True),
            Check(f"{where}: accuracy hybrid - sequential", paired(y["sequential"], y["hybrid"]), MORE_ACC, above=True),
        ]
        rows.append(
            [
                method,
                stream,
                str(len(y["hybrid"])),
                *(pm(a[k], 1, 3) for k in ("sequential", "hybrid", "joint")),
                *(pm(y[k]) for k in ("sequential", "hybrid", "joint")),
            ]
        )
    if rows:
        f.lines += table(
            [
                "method",
                "stream",
                "seeds",
                "AUC sequential",
                "AUC hybrid",
                "AUC joint",
                "sequential acc %",
                "hybrid acc %",
                "joint acc %",
            ],
            rows,
        )
    f.judge()
    if f.verdict == NOT_TESTABLE and not f.missing and not f.why:
        f.missing.append(
            f"hybrid, sequential and joint runs of an SSL method on one stream, with the `collapse` evaluator "
            f"({ix.target_seeds(scope)} seeds each)"
        )
        f.to_run = 3 * ix.target_seeds(scope)
    return f


def scatter_figure(figures: Figures, scope: str, points: list[RunFile]) -> str:
    import matplotlib.pyplot as plt

    found = {r.attrs["stream"] for r in points}  # one panel each: accuracies differ by task
    streams = [s for s in STREAMS if s in found] + sorted(found - set(STREAMS))
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(streams), figsize=(4.2 * len(streams), 3.8), layout="constrained", squeeze=False)
    methods = sorted({r.attrs["method"] for r in points})
    strategies = sorted({r.attrs["strategy"] for r in points}, key=lambda s: (s != "sequential", s != "joint", s))
    colour = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}  # every method in every panel: same colours
    marker = {s: "osD^vP*Xhp"[i % 10] for i, s in enumerate(strategies)}  # and each strategy its own marker
    for ax, stream in zip(axes[0], streams, strict=True):
        for method in methods:
            for strategy in strategies:
                mine = [
                    p
                    for r in points
                    if (r.attrs["method"], r.attrs["strategy"], r.attrs["stream"]) == (method, strategy, stream)
                    for p in phase_points(r)
                ]
                filled = strategy == "sequential"
                ax.scatter(
                    [x for x, _ in mine],
                    [100 * y for _, y in mine],
                    s=14 if filled else 30,  # hollow markers larger, so that their shape reads at this size
                    marker=marker[strategy],
                    facecolors=colour[method] if filled else "none",
                    edgecolors=colour[method],
                    linewidths=0.9,
                )
        ax.set_title(f"{stream} stream", fontsize=9)
    handles = [Line2D([], [], color=colour[m], marker="o", linestyle="", label=m) for m in methods]
    handles += [
        Line2D(
            [], [], color="0.3", marker=marker[s], markerfacecolor="0.3" if s == "sequential" else "none", linestyle="", label=s
        )
        for s in strategies
    ]
    axes[0][-1].legend(handles=handles, fontsize=7, title="colour: method, marker: strategy", title_fontsize=7, loc="best")
    axes[0][0].set_ylabel("mean accuracy over experiences %")
    fig.supxlabel("collapse AUC after each phase (higher = more collapsed); one point per run and phase", fontsize=9)
    fig.suptitle(f"Collapse vs accuracy, {scope}", fontsize=9)
    return figures.save(fig, figures.name("claim4_collapse", scope), f"collapse AUC vs accuracy, {scope}")
