"""Claim 1 (Hu et al. 2022): sequential SSL is nearly as good as joint on the instance and class streams; the
gap is larger on distant and domain streams."""

from __future__ import annotations

from ssl_bench.results.claims.base import (
    CONTRASTIVE,
    NON_CONTRASTIVE,
    NOT_TESTABLE,
    STREAMS,
    Figures,
    Finding,
    Index,
    RunFile,
    acc,
    gap_values,
    gaps_to_joint,
    learned,
    mark,
    num,
    pm,
    stat,
    table,
    verdict_of,
)

SMALL_GAP = 0.02  #: claim 1: a gap to joint of at most 2 accuracy points is "small"
LARGER_BY = 0.01  #: claim 1: "larger" = more than 1 point above both the instance and class gaps

SECTION = ("1", "Sequential vs joint")
CLAIMS = {
    "1": "Sequential SSL pre-training is nearly as good as joint training at equal compute on the instance and class "
    "streams; the gap is larger on the distant and domain streams (Hu et al. 2022).",
}
RULES = {
    "1": (
        f"reproduced if, for every one of {', '.join(CONTRASTIVE + NON_CONTRASTIVE)} with sequential and joint runs on "
        f"all four streams (at least one contrastive and one non-contrastive method needed), the gap (joint - "
        f"sequential final accuracy) is at most {SMALL_GAP * 100:.0f} points on instance and class, and the gap on "
        f"distant and on domain each exceeds both of those by more than {LARGER_BY * 100:.0f} point."
    ),
}


SCOPES = "own"


def judge(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    return [claim1(ix, scope, figures)]


def claim1(ix: Index, scope: str, figures: Figures | None) -> Finding:
    rows, complete, checks, used, lines = [], {}, [], [], []
    for method in CONTRASTIVE + NON_CONTRASTIVE:
        gaps = gaps_to_joint(ix, scope, method)
        for stream, pair in gaps.items():
            used += pair["sequential"] + pair["joint"]
            src = pair["joint"][0].scope
            rows.append(
                [
                    method,
                    stream if src == scope else f"{stream} ({src})",
                    str(len(pair["joint"])),
                    pm(acc(pair["sequential"])),
                    pm(acc(pair["joint"])),
                    pm(gap_values(pair)),
                    learned(pair["sequential"]),
                ]
            )
        if len(gaps) == len(STREAMS):
            complete[method] = {s: stat(gap_values(p))[0] for s, p in gaps.items()}
    f = Finding("1", scope, NOT_TESTABLE, runs=used)
    domains = ix.source(scope, "domain")
    made = ix.known[domains].get("dataset", {}).get("options", {}).get("transform_domains")
    if made:
        names = ", ".join(made) if isinstance(made, list) else "photo, grayscale, edges, cartoon"
        whose = "this protocol's data" if domains == scope else f"the domain stream's data (it runs under {domains})"
        f.lines += [
            f"The domains of {whose} are made from image transforms ({names}; dataset option "
            "`transform_domains`, `ssl_bench/blocks/domain_transforms.py`), not natural domains as DomainNet's.",
            "",
        ]
    if rows:
        f.lines += table(
            ["method", "stream", "seeds", "sequential acc %", "joint acc %", "gap (points)", "sequential - random init (points)"],
            rows,
        )
        f.lines += [
            "",
            "The last column is how much the sequential run learned: its final accuracy minus the same run's "
            "random-init backbone's. Where it is near 0 the gap compares backbones that barely left their "
            "initialisation, and says little about the claim.",
        ]
    for method, g in complete.items():
        small = max(g["instance"], g["class"])
        ok_small = small <= SMALL_GAP
        ok_large = min(g["distant"], g["domain"]) > small + LARGER_BY
        checks.append(ok_small and ok_large)
        lines.append(
            f"- {method}: instance {num(g['instance'])}, class {num(g['class'])} <= {num(SMALL_GAP)}: "
            f"{mark(ok_small)}; distant {num(g['distant'])}, domain {num(g['domain'])} > "
            f"{num(small + LARGER_BY)}: {mark(ok_large)}"
        )
    for family, methods in (("contrastive", CONTRASTIVE), ("non-contrastive", NON_CONTRASTIVE)):
        if any(m in complete for m in methods):
            continue
        method = max(methods, key=lambda m: (len(gaps_to_joint(ix, scope, m)), -methods.index(m)))  # the closest to complete
        parts = []
        for stream in (s for s in STREAMS if s not in gaps_to_joint(ix, scope, method)):
            for strategy in ("sequential", "joint"):
                text, n = ix.need(ix.source(scope, stream), method, stream, strategy, judged=scope)
                parts.append(text)
                f.to_run += n
        f.missing.append(f"a {family} method ({' or '.join(methods)}) on all four streams, e.g. {method}: {', '.join(parts)}")
    if not f.missing:
        f.verdict = verdict_of(checks)
    f.lines += [""] + lines if lines else []
    if figures and rows:
        f.lines += ["", gaps_figure(figures, scope, {m: gaps_to_joint(ix, scope, m) for m in CONTRASTIVE + NON_CONTRASTIVE})]
    return f


def gaps_figure(figures: Figures, scope: str, gaps: dict[str, dict[str, dict[str, list[RunFile]]]]) -> str:
    import matplotlib.pyplot as plt

    methods = [m for m in gaps if gaps[m]]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        xs = [k + i * width for k, s in enumerate(STREAMS) if s in gaps[m]]
        stats = [stat(gap_values(gaps[m][s])) for s in STREAMS if s in gaps[m]]
        ax.bar(xs, [100 * mu for mu, _ in stats], width, yerr=[100 * (sd or 0) for _, sd in stats], label=m, capsize=2)
    ax.axhline(100 * SMALL_GAP, color="grey", lw=0.8, ls="--")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(STREAMS))], STREAMS)
    ax.set_ylabel("joint - sequential (points)")
    ax.set_title(f"Gap to joint, {scope}")
    ax.legend(fontsize=8)
    return figures.save(fig, figures.name("claim1_gap", scope), f"gap to joint per stream, {scope}")
