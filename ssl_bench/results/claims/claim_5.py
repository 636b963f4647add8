"""Claim 5 (S3L, Cao & Wu 2021): small resolution first, then briefly full resolution, beats full resolution
only at equal compute.

A staged protocol (``train.stages``) is judged against its full-resolution twin of equal estimated FLOPs. The
comparison must hold what else decides the outcome: the learning-rate warm-up takes the same share of every
phase in both (:func:`warmup_share`, from each run's stored recipe and protocol; S3L's schedule is about
resolution, a longer warm-up share is a different recipe), the staged side must win by a margin beyond its 95%
interval (paired by seed), and at least two methods must show it. The measured minutes are shown beside the FLOPs
estimate: equal FLOPs is an estimate, and the wall-clock cost can differ.
"""

from __future__ import annotations

import json
from typing import Any

from ssl_bench.results.claims.base import (
    CONTRADICTED,
    MIN_SEEDS,
    NOT_TESTABLE,
    Check,
    Figures,
    Finding,
    Index,
    RunFile,
    acc,
    gate,
    paired,
    pm,
    table,
)

FLOPS_TOLERANCE = 0.1  #: claim 5: "equal compute" = estimated training FLOPs within 10%
#: claim 5: "beats" = staged - full accuracy, seed by seed, has its 95% interval above 1 point: S3L reports gains of
#: several points; a smaller one is within what a recipe detail moves
MARGIN = 0.01
WARMUP_TOLERANCE = 0.02  #: claim 5: warm-up shares (fractions of a phase) that differ by more are not comparable
MIN_METHODS = 2  #: claim 5: methods that must take part

SECTION = ("5", "S3L: small resolution first")
CLAIMS = {
    "5": "Pre-training at low resolution plus a short full-resolution phase beats full resolution only at equal compute "
    "(S3L, Cao & Wu 2021).",
}
RULES = {
    "5": (
        f"protocols are paired when their dataset (but its root), stream, backbone and evaluation are identical, one has "
        f"train.stages and the other not, and their estimated training FLOPs (epochs_per_experience x sum over stages "
        f"of fraction x resolution^2) agree within {FLOPS_TOLERANCE:.0%}. Every method/stream/strategy run under both "
        "takes part if the method learned under both (gain over random init at least 2 points, interval above 0) and "
        f"its warm-up share of a phase is the same under both (within {WARMUP_TOLERANCE * 100:.0f} percentage "
        f"points); staged - full final accuracy, seed by seed, has its 95% interval above {MARGIN * 100:.0f} point "
        f"(reproduced) or below it (contradicted). At least {MIN_METHODS} methods must take part (else not "
        "testable, unless one contradicts it); combined: contradicted if any item is, reproduced if all are, "
        "otherwise inconclusive."
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


def warmup_share(run: RunFile) -> float | None:
    """The warm-up's share of one schedule's steps: the recipe's ``warmup_epochs``, times the protocol's
    ``train.warmup_scale`` when it sets one (as the engine's schedule does), over the protocol's epochs per
    experience (over all experiences' under ``schedule_scope = "run"``); None without a stored recipe."""
    train = run.protocol.get("train", {})
    raw = run.arrays.get("recipe")
    if raw is None:
        return None
    recipe = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    epochs = float(train.get("epochs_per_experience", 0) or 0)
    if train.get("schedule_scope", "phase") == "run":
        epochs *= run.protocol.get("stream", {}).get("n_experiences", 1)
    scale = float(train.get("warmup_scale") or 1.0)
    return min(1.0, float(recipe.get("warmup_epochs", 0.0)) * scale / epochs) if epochs > 0 else None


def _shares(runs: list[RunFile]) -> str:
    values = sorted({round(100 * v) for v in (warmup_share(r) for r in runs) if v is not None})
    return "/".join(f"{v}%" for v in values) or "—"


def _minutes(runs: list[RunFile]) -> float | None:
    known = [r.minutes for r in runs if r.minutes is not None]
    return sum(known) / len(known) if known else None


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
            findings.append(_pair(ix, s, t, ratio))
    return findings


def _pair(ix: Index, s: str, t: str, ratio: float) -> Finding:
    f = Finding("5", f"{s} vs {t}", NOT_TESTABLE)
    rows, methods = [], set()
    keys = sorted({k[1:] for k in ix.groups if k[0] == s} & {k[1:] for k in ix.groups if k[0] == t})
    for method, stream, strategy in keys:
        a, b = ix.get(s, method, stream, strategy), ix.get(t, method, stream, strategy)
        seeds = sorted({r.seed for r in a} & {r.seed for r in b})
        if len(seeds) < MIN_SEEDS:
            continue
        a, b = [r for r in a if r.seed in seeds], [r for r in b if r.seed in seeds]
        f.runs += a + b
        d = paired(acc(b), acc(a))
        ma, mb = _minutes(a), _minutes(b)
        rows.append(
            [
                method,
                stream,
                strategy,
                str(len(seeds)),
                pm(acc(a)),
                pm(acc(b)),
                d.text() if d else "—",
                f"{_shares(a)} / {_shares(b)}",
                f"{ma:.1f} / {mb:.1f}" if ma is not None and mb is not None else "—",
            ]
        )
        where = f"{method}/{stream}/{strategy}"
        why = gate(method, f"{stream} under {s}", a) or gate(method, f"{stream} under {t}", b)
        shares = [warmup_share(r) for r in a + b]
        known = [v for v in shares if v is not None]
        if not why and (len(known) < len(shares) or max(known) - min(known) > WARMUP_TOLERANCE):
            why = f"{where}: the warm-up takes {_shares(a)} of each phase under {s} but {_shares(b)} under {t}"
        if why:
            f.why.append(why)
            continue
        methods.add(method)
        f.checks.append(Check(f"{where}: staged - full accuracy", d, MARGIN, above=True))
    f.lines.append(f"Estimated FLOPs of {t} / {s}: {ratio:.2f}.")
    minutes = (_minutes([r for r in f.runs if r.scope == t]), _minutes([r for r in f.runs if r.scope == s]))
    if minutes[0] and minutes[1]:
        f.lines[-1] += f" Measured minutes per run of {t} / {s} over the runs compared: {minutes[0] / minutes[1]:.2f}."
    if rows:
        f.lines += [
            "",
            *table(
                [
                    "method",
                    "stream",
                    "strategy",
                    "seeds",
                    f"{s} acc %",
                    f"{t} acc %",
                    "staged - full (points)",
                    "warm-up share (staged / full)",
                    "minutes per run (staged / full)",
                ],
                rows,
            ),
        ]
    else:
        f.missing.append(f"the same method/stream/strategy under both protocols with {MIN_SEEDS}+ seeds each")
        f.to_run = 2 * ix.target_seeds(s)
    f.judge()
    if len(methods) < MIN_METHODS and f.verdict != CONTRADICTED:
        f.verdict = NOT_TESTABLE
        f.why.append(f"{len(methods)} method(s) take part ({', '.join(sorted(methods)) or 'none'}); the rule needs {MIN_METHODS}")
    return f
