"""Claim 3 (Hu et al. 2022): SSL forgets less than supervised training on the same stream.

Forgetting is ``forgetting_max`` of sequential runs (:data:`ssl_bench.results.continual.DEFINITIONS`). The
comparison is paired by seed: supervised - SSL forgetting, with its 95% t-interval. It needs a reference that
forgets: where supervised training's own forgetting has its interval at or below 0 (it does not forget, e.g. on an
instance stream whose experiences share classes), "SSL forgets less" cannot be told from noise, and the stream is
not testable.
"""

from __future__ import annotations

import numpy as np

from ssl_bench.results.claims.base import (
    MIN_SEEDS,
    NOT_TESTABLE,
    SUPERVISED,
    Check,
    Figures,
    Finding,
    Index,
    RunFile,
    acc,
    gate,
    paired,
    pm,
    t_interval,
    table,
)

#: claim 3: "forgets less" = supervised - SSL forgetting_max, seed by seed, has its interval above 0 points
LESS_BY = 0.0

SECTION = ("3", "SSL forgets less than supervised")
CLAIMS = {
    "3": "SSL forgets less than supervised training on the same stream (Hu et al. 2022).",
}
RULES = {
    "3": (
        "on every stream where supervised sequential runs forget (forgetting_max's 95% interval above 0), for every "
        "SSL method whose sequential runs there learned (gain over random init at least 2 points, interval above 0): "
        f"supervised - SSL forgetting_max, seed by seed, lies above {LESS_BY * 100:.0f} (reproduced) or below it "
        "(contradicted). Combined over streams and methods: contradicted if any is, reproduced if all are, otherwise "
        "inconclusive; not testable where supervised does not forget."
    ),
}


SCOPES = "each"


def judge(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    return [claim3(ix, scope, figures)]


def forgetting(runs: list[RunFile]) -> list[float]:
    return [r.numbers["forgetting_max"] for r in runs]


def claim3(ix: Index, scope: str, figures: Figures | None) -> Finding:
    f = Finding("3", scope, NOT_TESTABLE)
    rows, panels = [], {}
    for stream in ix.streams(scope):
        sequential = {
            m: [r for r in ix.get(scope, m, stream, "sequential") if "forgetting_max" in r.numbers] for m in ix.methods(scope)
        }
        sup = sequential.pop(SUPERVISED, [])
        ssl = {m: g for m, g in sequential.items() if len(g) >= MIN_SEEDS}
        if len(sup) < MIN_SEEDS:
            if ssl:
                text, n = ix.need(scope, SUPERVISED, stream, "sequential")
                f.missing.append(text)
                f.to_run += n
            continue
        if not ssl:
            continue
        ref = t_interval(forgetting(sup))
        for method, group in [(SUPERVISED, sup), *ssl.items()]:
            f.runs += group
            rows.append(
                [method, stream, str(len(group)), pm(acc(group)), pm(forgetting(group)), pm(r.numbers["bwt"] for r in group)]
            )
            panels[(stream, method)] = group
        if ref is None or ref.low <= 0:
            f.why.append(
                f"supervised training does not forget on the {stream} stream (forgetting_max "
                f"{ref.text() if ref else '—'} points, interval not above 0)"
            )
            continue
        for method, group in ssl.items():
            why = gate(method, f"the {stream} stream", group)
            if why:
                f.why.append(why)
                continue
            seeds = sorted({r.seed for r in group} & {r.seed for r in sup})
            mine = {r.seed: r.numbers["forgetting_max"] for r in group}
            theirs = {r.seed: r.numbers["forgetting_max"] for r in sup}
            f.checks.append(
                Check(
                    f"{stream}: supervised - {method} forgetting_max",
                    paired([mine[s] for s in seeds], [theirs[s] for s in seeds]),
                    LESS_BY,
                    above=True,
                )
            )
    if rows:
        f.lines += table(["method", "stream", "seeds", "final acc %", "forgetting_max (points)", "BWT (points)"], rows)
    f.judge()
    if f.verdict == NOT_TESTABLE and not f.missing and not f.why:
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
