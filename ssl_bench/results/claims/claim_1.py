"""Claim 1 (Hu et al. 2022): sequential SSL is nearly as good as joint on the instance and class streams; the
gap is larger on distant and domain streams.

Each method's gap (joint - sequential accuracy) is taken seed by seed on every stream, with its 95% t-interval
(:mod:`ssl_bench.results.claims.base`). "Nearly as good" is a gap below :data:`SMALL_GAP`; "larger" compares the
gaps of a far stream (distant, domain) and a near one (instance, class) seed by seed, so the noise criterion is the
interval of that difference. Hu et al. judge pre-training by downstream transfer; protocol v2 files store it
(``end/downstream/...``), and every downstream accuracy all of a method's runs have is judged as well, each as
an item of its own. The domain stream comes from the protocol the judged one names as ``domain_protocol``
(natural domains, v2), or from its transform-domain twin (v1; :meth:`base.Index.source`).
"""

from __future__ import annotations

import math

from ssl_bench.results.claims.base import (
    CONTRADICTED,
    CONTRASTIVE,
    NON_CONTRASTIVE,
    NOT_TESTABLE,
    STREAMS,
    Check,
    Figures,
    Finding,
    Index,
    Measure,
    RunFile,
    family,
    gap_values,
    gaps_to_joint,
    gate,
    learning,
    measures,
    paired,
    pm,
    t_interval,
    table,
)

#: claim 1: a gap to joint whose interval lies below 2 accuracy points is "nearly as good": the paper reports
#: sequential within about 1-2 points of joint on its instance and class streams
SMALL_GAP = 0.02
#: claim 1: "larger" = the far stream's gap minus the near stream's, seed by seed, has its interval above 0 (the
#: interval is the noise criterion; the paper gives no size for "larger")
LARGER_BY = 0.0
FAMILIES_NEEDED = (CONTRASTIVE, NON_CONTRASTIVE)
NEAR, FAR = ("instance", "class"), ("distant", "domain")

SECTION = ("1", "Sequential vs joint")
CLAIMS = {
    "1": "Sequential SSL pre-training is nearly as good as joint training at equal compute on the instance and class "
    "streams; the gap is larger on the distant and domain streams (Hu et al. 2022).",
}
RULES = {
    "1": (
        "for every contrastive and non-contrastive method (base.FAMILIES) with sequential and joint runs on all four "
        "streams that learned on each of them (gain over random init at least 2 points, interval above 0), and for "
        "each accuracy all its runs store (the held-out probe; in v2 files also each downstream accuracy): the gap "
        f"(joint - sequential, seed by seed) lies below {SMALL_GAP * 100:.0f} points on instance and on class (95% "
        "interval wholly below: reproduced; wholly above: contradicted), and for each far stream (distant, domain) "
        "and near stream (instance, class) the far gap minus the near gap, seed by seed, lies above "
        f"{LARGER_BY * 100:.0f}. Combined: contradicted if any item is; otherwise not testable unless a learning "
        "method of each family (contrastive, non-contrastive) has all four streams; reproduced if every item is; "
        "otherwise inconclusive."
    ),
}


SCOPES = "own"


def judge(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    return [claim1(ix, scope, figures)]


def candidates(ix: Index, scope: str) -> list[str]:
    """The methods of the two families with runs under ``scope`` or its domain stream's protocol."""
    found = set(ix.methods(scope)) | set(ix.methods(ix.source(scope, "domain")))
    return sorted(m for m in found if family(m) in FAMILIES_NEEDED)


def method_checks(method: str, gaps: dict[str, dict[str, list[RunFile]]]) -> list[Check]:
    """The items of one method with all four streams: the near gaps and the far - near differences, each on every
    accuracy the runs it compares all store (:func:`base.measures`; a domain stream under a protocol without the
    downstream evaluator, e.g. pacs-cpu, is compared on the held-out probe only)."""

    def runs(*streams: str) -> list[RunFile]:
        return [r for s in streams for g in gaps[s].values() for r in g]

    def gap(stream: str, value: Measure) -> dict[int, float]:
        pair = gaps[stream]
        return {s.seed: value[1](j) - value[1](s) for s, j in zip(pair["sequential"], pair["joint"])}

    out = []
    for near in NEAR:
        for m in measures(runs(near)):
            out.append(Check(f"{method}, {m[0]}: gap on {near}", t_interval(gap(near, m).values()), SMALL_GAP, above=False))
    for far in FAR:
        for near in NEAR:
            for m in measures(runs(far, near)):
                g_far, g_near = gap(far, m), gap(near, m)
                seeds = sorted(set(g_far) & set(g_near))
                out.append(
                    Check(
                        f"{method}, {m[0]}: gap on {far} - gap on {near}",
                        paired([g_near[s] for s in seeds], [g_far[s] for s in seeds]),
                        LARGER_BY,
                        above=True,
                    )
                )
    return out


def claim1(ix: Index, scope: str, figures: Figures | None) -> Finding:
    f = Finding("1", scope, NOT_TESTABLE)
    rows, learners = [], {fam: [] for fam in FAMILIES_NEEDED}  # type: ignore[var-annotated]
    complete: dict[str, list[str]] = {fam: [] for fam in FAMILIES_NEEDED}
    for method in candidates(ix, scope):
        gaps = gaps_to_joint(ix, scope, method)
        for stream, pair in gaps.items():
            f.runs += pair["sequential"] + pair["joint"]
            src = pair["joint"][0].scope
            for name, value in measures(pair["sequential"] + pair["joint"]):
                seq, joint = [value(r) for r in pair["sequential"]], [value(r) for r in pair["joint"]]
                iv = paired(seq, joint)
                rows.append(
                    [
                        method,
                        stream if src == scope else f"{stream} ({src})",
                        name,
                        str(len(seq)),
                        pm(seq),
                        pm(joint),
                        iv.text() if iv else "—",
                        _gain(pair["sequential"] + pair["joint"]) if name == "held-out probe" else "",
                    ]
                )
        if len(gaps) < len(STREAMS):
            continue
        complete[family(method)].append(method)
        why = next((w for w in (gate(method, f"the {s} stream", p["sequential"] + p["joint"]) for s, p in gaps.items()) if w), "")
        if why:
            f.why.append(why)
            continue
        learners[family(method)].append(method)
        f.checks += method_checks(method, gaps)
    domains = ix.source(scope, "domain")
    made = ix.known.get(domains, {}).get("dataset", {}).get("options", {}).get("transform_domains")
    if made:
        names = ", ".join(made) if isinstance(made, list) else "photo, grayscale, edges, cartoon"
        whose = "this protocol's data" if domains == scope else f"the domain stream's data (it runs under {domains})"
        f.lines += [
            f"The domains of {whose} are made from image transforms ({names}; dataset option "
            "`transform_domains`, `ssl_bench/blocks/domain_transforms.py`), not natural domains as DomainNet's.",
            "",
        ]
    elif domains != scope:
        f.lines += [f"The domain stream runs under {domains} (natural domains, named by `domain_protocol`).", ""]
    if rows:
        f.lines += table(
            [
                "method",
                "stream",
                "accuracy",
                "seeds",
                "sequential acc %",
                "joint acc %",
                "gap (points) [95% interval]",
                "gain over random init (points) [95% interval]",
            ],
            rows,
        )
        f.lines += [
            "",
            "The gain over random init is the mean, per seed, of the sequential and joint runs' final accuracy minus "
            "the same run's random-init backbone's: a method whose gain is below 2 points, or whose interval "
            "reaches 0, takes no part (its backbone barely left its initialisation).",
        ]
    f.judge()
    blocked = False
    for fam in FAMILIES_NEEDED:
        if learners[fam]:
            continue
        blocked = True
        if complete[fam]:
            f.why.append(f"no {fam} method learns on every stream ({', '.join(complete[fam])})")
        else:
            f.missing.append(_missing(ix, scope, f, fam))
    if blocked and f.verdict != CONTRADICTED:  # a contradiction by a method that learned stands on its own
        f.verdict = NOT_TESTABLE
    if figures and rows:
        f.lines += ["", gaps_figure(figures, scope, {m: gaps_to_joint(ix, scope, m) for m in candidates(ix, scope)})]
    return f


def _gain(runs: list[RunFile]) -> str:
    iv = learning(runs)
    return iv.text() if iv else "—"


def _missing(ix: Index, scope: str, f: Finding, fam: str) -> str:
    """The runs a family's closest-to-complete method lacks (counted into ``f.to_run``)."""
    methods = [m for m in candidates(ix, scope) if family(m) == fam] or [m for m in ("simclr", "byol") if family(m) == fam]
    method = max(methods, key=lambda m: (len(gaps_to_joint(ix, scope, m)), -methods.index(m)))
    parts = []
    for stream in (s for s in STREAMS if s not in gaps_to_joint(ix, scope, method)):
        for strategy in ("sequential", "joint"):
            text, n = ix.need(ix.source(scope, stream), method, stream, strategy, judged=scope)
            parts.append(text)
            f.to_run += n
    return f"a {fam} method on all four streams, e.g. {method}: {', '.join(parts)}"


def gaps_figure(figures: Figures, scope: str, gaps: dict[str, dict[str, dict[str, list[RunFile]]]]) -> str:
    import matplotlib.pyplot as plt

    methods = [m for m in gaps if gaps[m]]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        xs = [k + i * width for k, s in enumerate(STREAMS) if s in gaps[m]]
        ivs = [t_interval(gap_values(gaps[m][s])) for s in STREAMS if s in gaps[m]]
        means = [100 * (iv.mean if iv else math.nan) for iv in ivs]
        halves = [100 * (iv.high - iv.mean if iv else 0.0) for iv in ivs]
        ax.bar(xs, means, width, yerr=halves, label=m, capsize=2)
    ax.axhline(100 * SMALL_GAP, color="grey", lw=0.8, ls="--")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(STREAMS))], STREAMS)
    ax.set_ylabel("joint - sequential (points), 95% interval")
    ax.set_title(f"Gap to joint (held-out probe), {scope}")
    ax.legend(fontsize=8)
    return figures.save(fig, figures.name("claim1_gap", scope), f"gap to joint per stream, {scope}")
