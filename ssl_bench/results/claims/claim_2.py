"""Claim 2 (Hu et al. 2022): replay and MAS close part of the gap to joint where it is largest."""

from __future__ import annotations

from ssl_bench.results.claims.base import (
    NOT_TESTABLE,
    STREAMS,
    Figures,
    Finding,
    Index,
    acc,
    gap_values,
    gaps_to_joint,
    mark,
    num,
    pm,
    stat,
    table,
    verdict_of,
)

MIN_GAP = 0.01  #: claim 2: below 1 point there is no gap to close
MIN_FRACTION = 0.1  #: claim 2: "closes part of the gap" = at least 10% of it

SECTION = ("2", "Replay and MAS")
CLAIMS = {
    "2": "Replay and MAS close part of the gap to joint where it is largest (Hu et al. 2022).",
}
RULES = {
    "2": (
        f"on each SSL method's stream with the largest gap to joint (at least {MIN_GAP * 100:.0f} point), fraction "
        "closed = (acc_strategy - acc_sequential) / (acc_joint - acc_sequential); reproduced if replay and mas each "
        f"close at least {MIN_FRACTION:.0%} of the gap for every method where both ran."
    ),
}


SCOPES = "own"


def judge(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    return [claim2(ix, scope)]


def claim2(ix: Index, scope: str) -> Finding:
    f = Finding("2", scope, NOT_TESTABLE)
    rows, checks, lines = [], [], []
    largest_any = None
    for method in ix.methods(scope, ssl_only=True):
        gaps = gaps_to_joint(ix, scope, method)
        if not gaps:
            continue
        means = {s: stat(gap_values(p))[0] for s, p in gaps.items()}
        stream = max(means, key=lambda s: (means[s], -STREAMS.index(s)))
        if largest_any is None or means[stream] > largest_any[2]:
            largest_any = (method, stream, means[stream])
        if means[stream] < MIN_GAP:
            lines.append(
                f"- {method}: largest gap {num(means[stream])} points ({stream}) is below {num(MIN_GAP)}: no gap to close"
            )
            continue
        src = gaps[stream]["joint"][0].scope  # the domain twin's, for a domain stream taken from it
        regs = sorted({k[3] for k in ix.groups if k[:3] == (src, method, stream) and set(k[3].split("+")) <= {"replay", "mas"}})
        fractions = {}
        for strategy in regs:
            trio = ix.paired(src, method, stream, "sequential", "joint", strategy)
            if trio is None:
                continue
            seq, joint, s = (stat(acc(trio[k]))[0] for k in ("sequential", "joint", strategy))
            fractions[strategy] = (s - seq) / (joint - seq) if joint - seq > 0 else float("nan")
            f.runs += trio["sequential"] + trio["joint"] + trio[strategy]
            rows.append(
                [
                    method,
                    stream if src == scope else f"{stream} ({src})",
                    strategy,
                    str(len(trio[strategy])),
                    pm(acc(trio["sequential"])),
                    pm(acc(trio["joint"])),
                    pm(acc(trio[strategy])),
                    pm(gap_values(trio)),
                    pm([x - q for q, x in zip(acc(trio["sequential"]), acc(trio[strategy]))]),
                    f"{fractions[strategy]:.2f}",
                ]
            )
        if "replay" in fractions and "mas" in fractions:
            ok = bool(fractions["replay"] >= MIN_FRACTION and fractions["mas"] >= MIN_FRACTION)
            checks.append(ok)
            lines.append(
                f"- {method} on {stream}: replay closes {fractions['replay']:.2f}, mas {fractions['mas']:.2f} "
                f"of the gap, both >= {MIN_FRACTION}: {mark(ok)}"
            )
        else:
            for strategy in ("replay", "mas"):
                if strategy not in fractions:
                    text, n = ix.need(src, method, stream, strategy, judged=scope)
                    f.missing.append(text)
                    f.to_run += n
    if rows:
        f.lines += table(
            [
                "method",
                "stream (largest gap)",
                "strategy",
                "seeds",
                "sequential acc %",
                "joint acc %",
                "strategy acc %",
                "gap to joint (points)",
                "strategy - sequential (points)",
                "fraction closed",
            ],
            rows,
        )
    f.lines += [""] + lines if lines else []
    if checks:
        f.verdict, f.missing, f.to_run = verdict_of(checks), [], 0
    elif largest_any is None:
        f.missing.append("sequential and joint runs of an SSL method on some stream (claim 1's runs)")
    elif not f.missing:
        f.missing.append(
            f"a stream where an SSL method's gap to joint is at least {num(MIN_GAP)} points "
            f"(largest here: {largest_any[0]} on {largest_any[1]}, {num(largest_any[2])})"
        )
    return f
