"""Claim 3 (Hu et al. 2022): SSL forgets less than supervised training on the same stream."""

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
    mark,
    num,
    pm,
    stat,
    table,
    verdict_of,
)

SECTION = ("3", "SSL forgets less than supervised")
CLAIMS = {
    "3": "SSL forgets less than supervised training on the same stream (Hu et al. 2022).",
}
RULES = {
    "3": (
        "reproduced if, on every stream where supervised and SSL sequential runs exist, every SSL method's mean "
        "forgetting_max is below the supervised method's."
    ),
}


SCOPES = "each"


def judge(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    return [claim3(ix, scope, figures)]


def claim3(ix: Index, scope: str, figures: Figures | None) -> Finding:
    f = Finding("3", scope, NOT_TESTABLE)
    rows, checks, lines, panels = [], [], [], {}
    for stream in ix.streams(scope):
        sequential = {
            m: [r for r in ix.get(scope, m, stream, "sequential") if "forgetting_max" in r.numbers] for m in ix.methods(scope)
        }
        sup = sequential.pop(SUPERVISED, [])
        ssl = sequential
        ssl = {m: g for m, g in ssl.items() if len(g) >= MIN_SEEDS}
        if len(sup) < MIN_SEEDS:
            if ssl:
                text, n = ix.need(scope, SUPERVISED, stream, "sequential")
                f.missing.append(text)
                f.to_run += n
            continue
        if not ssl:
            continue
        sup_forget = stat(r.numbers["forgetting_max"] for r in sup)[0]
        for method, group in [(SUPERVISED, sup), *ssl.items()]:
            f.runs += group
            rows.append(
                [
                    method,
                    stream,
                    str(len(group)),
                    pm(acc(group)),
                    pm(r.numbers["forgetting_max"] for r in group),
                    pm(r.numbers["bwt"] for r in group),
                ]
            )
            panels[(stream, method)] = group
            if method != SUPERVISED:
                forget = stat(r.numbers["forgetting_max"] for r in group)[0]
                ok = forget < sup_forget
                checks.append(ok)
                lines.append(f"- {stream}: {method} forgetting {num(forget)} < supervised {num(sup_forget)}: {mark(ok)}")
    if rows:
        f.lines += table(["method", "stream", "seeds", "final acc %", "forgetting_max (points)", "BWT (points)"], rows)
    f.lines += [""] + lines if lines else []
    if checks:
        f.verdict, f.missing, f.to_run = verdict_of(checks), [], 0
    elif not f.missing:
        f.missing.append(
            f"sequential runs of {SUPERVISED} and of an SSL method on the same stream ({ix.target_seeds(scope)} seeds each)"
        )
        f.to_run = 2 * ix.target_seeds(scope)
    if figures and panels:
        f.lines += ["", matrices_figure(figures, scope, panels)]
    return f


def matrices_figure(figures: Figures, scope: str, panels: dict[tuple[str, str], list[RunFile]]) -> str:
    import matplotlib.pyplot as plt

    streams = list(dict.fromkeys(s for s, _ in panels))
    methods = [SUPERVISED] + sorted({m for _, m in panels} - {SUPERVISED})
    fig, axes = plt.subplots(
        len(streams), len(methods), figsize=(2.6 * len(methods), 2.4 * len(streams)), squeeze=False, layout="constrained"
    )
    means = {}
    for key, group in panels.items():
        if len({r.arrays["metrics/acc_matrix"].shape for r in group}) == 1:
            means[key] = 100 * np.mean([np.asarray(r.arrays["metrics/acc_matrix"], dtype=float) for r in group], axis=0)
    # one colour scale for all panels, from 0 to the largest mean accuracy, so that low accuracies still differ
    vmax = max((float(m.max()) for m in means.values()), default=100.0) or 100.0
    image = None
    for (i, stream), (j, method) in ((a, b) for a in enumerate(streams) for b in enumerate(methods)):
        ax = axes[i][j]
        m = means.get((stream, method))
        if m is None:
            ax.set_visible(False)
            continue
        image = ax.imshow(m, vmin=0, vmax=vmax, cmap="viridis")
        for (y, x), v in np.ndenumerate(m):
            colour = "white" if v < vmax / 2 else "black"
            ax.text(x, y, f"{v:.1f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_title(f"{method}, {stream}", fontsize=8)
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.tick_params(labelsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="accuracy %")
    fig.suptitle(f"Accuracy matrices of sequential runs (row: after phase, column: experience), {scope}", fontsize=9)
    return figures.save(fig, figures.name("claim3_acc_matrices", scope), f"accuracy matrices, {scope}")
