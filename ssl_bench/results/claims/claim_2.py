"""Claim 2 (Hu et al. 2022): replay and MAS close the gap to joint where it is largest, in two forms.

Weak (2a): the strategy gains over plain sequential training (its - sequential accuracy, seed by seed, has its
95% interval above 0), i.e. it closes part of the gap. Strong (2b), the paper's wording ("performs comparably to
joint"): joint - strategy stays below an equivalence margin. Each is judged on every SSL method's stream with the
largest gap to joint among the streams where the method learned and the gap is real (its interval above 0), and on
every accuracy the runs store (held-out probe; downstream transfer in v2 files), as claim 1.
"""

from __future__ import annotations

from ssl_bench.results.claims.base import (
    NOT_TESTABLE,
    STREAMS,
    SUPERVISED,
    Check,
    Figures,
    Finding,
    Index,
    RunFile,
    gap_values,
    gaps_to_joint,
    gate,
    measures,
    paired,
    pm,
    stat,
    t_interval,
    table,
)

#: claim 2a: a strategy "closes part of the gap" when its gain over sequential has its interval above 0
WEAK_GAIN = 0.0
#: claim 2b: "comparable to joint" = joint - strategy with its interval below 2 points, the margin claim 1 calls
#: "nearly as good"; an interval that merely contains 0 is absence of evidence, not equivalence
EQUIVALENCE = 0.02
REGULARISERS = {"replay", "mas"}  #: strategies of the claim (and their compositions, e.g. replay+mas)

SECTION = ("2", "Replay and MAS")
CLAIMS = {
    "2a": "Replay and MAS close part of the gap to joint where it is largest (Hu et al. 2022; the weak form).",
    "2b": "Sequential training with replay or MAS performs comparably to joint training (Hu et al. 2022; the strong form).",
}
_WHERE = (
    "on each SSL method's stream with the largest gap to joint (joint - sequential, held-out probe), among the "
    "streams where it learned (gain over random init at least 2 points, interval above 0) and where the gap's 95% "
    "interval lies above 0, with replay and mas runs there, for each accuracy all the runs store (held-out probe; "
    "downstream in v2 files), seed by seed: "
)
RULES = {
    "2a": _WHERE + f"strategy - sequential has its interval above {WEAK_GAIN * 100:.0f} (reproduced) or below it "
    "(contradicted), for replay and for mas. Combined over methods, strategies and accuracies: contradicted if any "
    "is, reproduced if all are, otherwise inconclusive.",
    "2b": _WHERE + f"joint - strategy has its interval below the equivalence margin of {EQUIVALENCE * 100:.0f} points "
    "(reproduced) or above it (contradicted), for replay and for mas. Combined as 2a.",
}


SCOPES = "own"


def judge(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    return claim2(ix, scope)


def largest_gap(ix: Index, scope: str, method: str) -> tuple[str, dict[str, list[RunFile]], list[str]]:
    """The stream with the largest mean gap among those where ``method`` learned and the gap is real ("" if none),
    its sequential and joint runs, and why the other streams were passed over."""
    gaps = gaps_to_joint(ix, scope, method)
    passed: list[str] = []
    usable = {}
    for stream, pair in gaps.items():
        why = gate(method, f"the {stream} stream", pair["sequential"] + pair["joint"])
        iv = t_interval(gap_values(pair))
        if why:
            passed.append(why)
        elif iv is None or iv.low <= 0:
            passed.append(f"{method}'s gap to joint on {stream} is not above 0 ({iv.text() if iv else '—'} points)")
        else:
            usable[stream] = pair
    if not usable:
        return "", {}, passed
    means = {s: stat(gap_values(p))[0] for s, p in usable.items()}
    stream = max(means, key=lambda s: (means[s], -STREAMS.index(s)))
    return stream, usable[stream], passed


def claim2(ix: Index, scope: str) -> list[Finding]:
    weak, strong = Finding("2a", scope, NOT_TESTABLE), Finding("2b", scope, NOT_TESTABLE)
    rows, any_gaps = [], False
    methods = sorted((set(ix.methods(scope)) | set(ix.methods(ix.source(scope, "domain")))) - {SUPERVISED})
    for method in methods:
        if not gaps_to_joint(ix, scope, method):
            continue
        any_gaps = True
        stream, pair, passed = largest_gap(ix, scope, method)
        if not stream:
            for f in (weak, strong):
                f.runs += [r for p in gaps_to_joint(ix, scope, method).values() for g in p.values() for r in g]
                f.why.append(f"{method} has no stream to judge: {'; '.join(passed)}")
            continue
        src = pair["joint"][0].scope  # the domain protocol's, for a domain stream taken from it
        regs = sorted({k[3] for k in ix.groups if k[:3] == (src, method, stream) and set(k[3].split("+")) <= REGULARISERS})
        judged = set()
        for strategy in regs:
            trio = ix.paired(src, method, stream, "sequential", "joint", strategy)
            if trio is None:
                continue
            judged.update(strategy.split("+"))
            for f in (weak, strong):
                f.runs += trio["sequential"] + trio["joint"] + trio[strategy]
            for name, value in measures(trio["sequential"] + trio["joint"] + trio[strategy]):
                seq, joint, mine = ([value(r) for r in trio[k]] for k in ("sequential", "joint", strategy))
                gain, behind, gap = paired(seq, mine), paired(mine, joint), paired(seq, joint)
                where = f"{method} on {stream if src == scope else f'{stream} ({src})'}, {name}"
                weak.checks.append(Check(f"{where}: {strategy} - sequential", gain, WEAK_GAIN, above=True))
                strong.checks.append(Check(f"{where}: joint - {strategy}", behind, EQUIVALENCE, above=False))
                rows.append(
                    [
                        method,
                        stream if src == scope else f"{stream} ({src})",
                        strategy,
                        name,
                        str(len(seq)),
                        pm(seq),
                        pm(joint),
                        pm(mine),
                        *(iv.text() if iv else "—" for iv in (gap, gain, behind)),
                    ]
                )
        for strategy in sorted(REGULARISERS - judged):
            text, n = ix.need(src, method, stream, strategy, judged=scope)
            for f in (weak, strong):
                f.missing.append(text)
                f.to_run += n
    if rows:
        weak.lines += table(
            [
                "method",
                "stream (largest gap)",
                "strategy",
                "accuracy",
                "seeds",
                "sequential acc %",
                "joint acc %",
                "strategy acc %",
                "joint - sequential (points)",
                "strategy - sequential (points)",
                "joint - strategy (points)",
            ],
            rows,
        )
        weak.lines += ["", "Differences are taken seed by seed; brackets: 95% t-interval over seeds."]
        strong.lines += ["The runs and intervals are in the table under 2a."]
    for f in (weak, strong):
        f.judge()
        if f.verdict == NOT_TESTABLE and not any_gaps:
            f.missing.append("sequential and joint runs of an SSL method on some stream (claim 1's runs)")
    return [weak, strong]
