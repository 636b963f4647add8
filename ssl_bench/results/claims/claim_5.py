"""Claim 5 (S3L, Cao & Wu 2021): small resolution first, then briefly full resolution, beats full resolution
only at equal compute."""

from __future__ import annotations

import json
from typing import Any

from ssl_bench.results.claims.base import (
    MIN_SEEDS,
    NOT_TESTABLE,
    Figures,
    Finding,
    Index,
    acc,
    mark,
    num,
    pm,
    stat,
    table,
    verdict_of,
)

FLOPS_TOLERANCE = 0.1  #: claim 5: "equal compute" = estimated training FLOPs within 10%

SECTION = ("5", "S3L: small resolution first")
CLAIMS = {
    "5": "Pre-training at low resolution plus a short full-resolution phase beats full resolution only at equal compute "
    "(S3L, Cao & Wu 2021).",
}
RULES = {
    "5": (
        f"protocols are paired when their dataset (but its root), stream, backbone and evaluation are identical, one has "
        f"train.stages and the other not, and their estimated training FLOPs (epochs_per_experience x sum over stages "
        f"of fraction x resolution^2) agree within {FLOPS_TOLERANCE:.0%}; reproduced if the staged protocol's mean final "
        "accuracy is higher for every method/stream/strategy run under both."
    ),
}


SCOPES = "pairs"  # judged once over all protocols: staged ones against their full-resolution twins


def judge(ix: Index, scope: str | None, figures: Figures | None) -> list[Finding]:
    return claim5(ix)


def _flops(proto: dict[str, Any]) -> float:
    """Relative training FLOPs: epochs per experience x sum over stages of fraction x resolution^2."""
    train, res = proto["train"], proto["dataset"]["resolution"]
    stages = train.get("stages") or [{"resolution": res, "fraction": 1.0}]
    return float(train["epochs_per_experience"]) * sum(s["fraction"] * s["resolution"] ** 2 for s in stages)


def _comparable(p: dict[str, Any]) -> str:
    dataset = {k: v for k, v in p.get("dataset", {}).items() if k != "root"}
    return json.dumps([dataset, p.get("stream"), p.get("backbone"), p.get("eval")], sort_keys=True)


def claim5(ix: Index) -> list[Finding]:
    staged = [s for s in ix.scopes if ix.protocols[s].get("train", {}).get("stages")]
    full = [s for s in ix.scopes if not ix.protocols[s].get("train", {}).get("stages")]
    if not staged:
        return [
            Finding(
                "5",
                "all",
                NOT_TESTABLE,
                missing=[
                    "runs under a protocol with train.stages (S3L), e.g. "
                    "tinyimagenet-s3l, and under its equal-compute full-resolution twin"
                ],
            )
        ]
    findings = []
    for s in staged:
        ps = ix.protocols[s]
        twins = [(t, _flops(ix.protocols[t]) / _flops(ps)) for t in full if _comparable(ix.protocols[t]) == _comparable(ps)]
        matched = [(t, ratio) for t, ratio in twins if abs(ratio - 1) <= FLOPS_TOLERANCE]
        if not matched:
            epochs = _flops(ps) / ps["dataset"]["resolution"] ** 2
            others = "; ".join(f"{t} has {ratio:.2f}x the FLOPs" for t, ratio in twins) or "none among the files"
            findings.append(
                Finding(
                    "5",
                    s,
                    NOT_TESTABLE,
                    missing=[
                        f"runs under a protocol without train.stages, otherwise as {s}, with epochs_per_experience = "
                        f"{epochs:.3g} (equal estimated FLOPs); comparable protocols: {others}"
                    ],
                )
            )
            continue
        for t, ratio in matched:
            f = Finding("5", f"{s} vs {t}", NOT_TESTABLE)
            rows, checks, lines = [], [], []
            keys = sorted({k[1:] for k in ix.groups if k[0] == s} & {k[1:] for k in ix.groups if k[0] == t})
            for method, stream, strategy in keys:
                a, b = ix.get(s, method, stream, strategy), ix.get(t, method, stream, strategy)
                if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
                    continue
                f.runs += a + b
                ma, mb = stat(acc(a))[0], stat(acc(b))[0]
                checks.append(ma > mb)
                minutes = lambda g: sum(r.minutes or 0.0 for r in g) / len(g)  # noqa: E731
                rows.append(
                    [
                        method,
                        stream,
                        strategy,
                        f"{len(a)} / {len(b)}",
                        pm(acc(a)),
                        pm(acc(b)),
                        num(ma - mb),
                        f"{minutes(a):.1f} / {minutes(b):.1f}",
                    ]
                )
                lines.append(f"- {method}/{stream}/{strategy}: staged {num(ma)} > full {num(mb)}: {mark(ma > mb)}")
            f.lines.append(f"Estimated FLOPs of {t} / {s}: {ratio:.2f}.")
            if rows:
                f.lines += (
                    [""]
                    + table(
                        [
                            "method",
                            "stream",
                            "strategy",
                            "seeds",
                            f"{s} acc %",
                            f"{t} acc %",
                            "difference (points)",
                            "minutes per run",
                        ],
                        rows,
                    )
                    + [""]
                    + lines
                )
                f.verdict = verdict_of(checks)
            else:
                f.missing.append(f"the same method/stream/strategy under both protocols with {MIN_SEEDS}+ seeds each")
                f.to_run = 2 * ix.target_seeds(s)
            findings.append(f)
    return findings
