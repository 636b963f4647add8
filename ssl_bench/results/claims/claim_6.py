"""Claims 6a-6b (Hu et al. 2022): sequential SSL stays closer to joint (CKA) and reaches flatter minima than
supervised training.

Both are paired by seed (SSL and supervised runs of the same seed) with 95% t-intervals. Sharpness is only
comparable when it is measured on one common loss: the ``sharpness`` evaluator's ``probe_top_eigenvalue`` is the
largest Hessian eigenvalue of the linear probe's cross-entropy on the frozen features (protocol v2 and later).
The older ``top_eigenvalue`` was measured on each method's own training loss (VICReg's about 21, BYOL's about 1,
cross-entropy about 4) and by largest magnitude, so a saddle (a negative eigenvalue) counted as flat: files
without ``probe_top_eigenvalue`` are not testable for 6b. A top eigenvalue at or below 0 is a saddle or a failed
power iteration, never a flat minimum: such a run is left out, and says so.
"""

from __future__ import annotations

from ssl_bench.errors import UserError
from ssl_bench.results import continual
from ssl_bench.results.claims.base import (
    MIN_SEEDS,
    NOT_TESTABLE,
    SUPERVISED,
    Check,
    Figures,
    Finding,
    Index,
    RunFile,
    gate,
    log,
    paired,
    pm,
    pm_end,
    table,
)
from ssl_bench.results.tables import md_text

HIGHER_CKA = 0.0  #: claim 6a: SSL - supervised CKA, seed by seed, has its interval above 0
FLATTER = 0.0  #: claim 6b: supervised - SSL probe top eigenvalue, seed by seed, has its interval above 0
SHARPNESS = "sharpness/probe_top_eigenvalue"  #: the comparable sharpness (common loss: the probe's cross-entropy)

SECTION = ("6", "CKA and sharpness")
CLAIMS = {
    "6a": "Sequentially trained SSL models stay closer to the joint model (CKA) than supervised ones (Hu et al. 2022).",
    "6b": "SSL reaches flatter minima than supervised training (Hu et al. 2022).",
}
RULES = {
    "6a": (
        "linear CKA between the final backbones of sequential and joint runs of the same seed (stored `cka` "
        "features); on every stream where supervised has it, for every SSL method that learned there (gain over "
        "random init at least 2 points, interval above 0): SSL - supervised CKA, seed by seed, has its 95% interval "
        f"above {HIGHER_CKA:.0f} (reproduced) or below it (contradicted). Combined over streams and methods: "
        "contradicted if any is, reproduced if all are, otherwise inconclusive."
    ),
    "6b": (
        "the largest positive Hessian eigenvalue of one common loss, the linear probe's cross-entropy on the frozen "
        f"features (`end/{SHARPNESS}`), at the end of sequential runs; runs where it is at or below 0 are left "
        "out (a saddle, never flat). On every stream where supervised has it, for every SSL method that learned "
        f"there: supervised - SSL, seed by seed, has its 95% interval above {FLATTER:.0f} (reproduced) or below it "
        "(contradicted). Combined as 6a; not testable on files without it (each loss's own eigenvalue is not "
        "comparable across losses)."
    ),
}


SCOPES = "each"


def judge(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    return claim6(ix, scope)


def _cka(pair: dict[str, list[RunFile]]) -> dict[int, float]:
    out = {}
    for seq, joint in zip(pair["sequential"], pair["joint"]):
        try:
            v = continual.cka_to_joint(seq, joint)
        except UserError as err:
            log.warning("CKA of %s: %s", seq.rel, err)
            v = None
        if v is not None:
            out[seq.seed] = v
    return out


def _against(ref: dict[int, float], mine: dict[int, float], ssl_higher: bool) -> tuple[list[float], list[float]]:
    """(low side, high side) on the seeds both have, so that ``paired`` gives the claimed difference."""
    seeds = sorted(set(ref) & set(mine))
    a, b = [ref[s] for s in seeds], [mine[s] for s in seeds]
    return (a, b) if ssl_higher else (b, a)


def claim6(ix: Index, scope: str) -> list[Finding]:
    a, b = Finding("6a", scope, NOT_TESTABLE), Finding("6b", scope, NOT_TESTABLE)
    rows_a, rows_b, unmeasured = [], [], []
    for stream in ix.streams(scope):
        cka: dict[str, dict[int, float]] = {}
        sharp: dict[str, dict[int, float]] = {}
        for method in ix.methods(scope):
            pair = ix.paired(scope, method, stream, "sequential", "joint")
            values = _cka(pair) if pair else {}
            if pair and len(values) >= MIN_SEEDS:
                cka[method] = values
                a.runs += pair["sequential"] + pair["joint"]
                rows_a.append([method, stream, str(len(values)), pm(values.values(), 1, 3)])
            seq = ix.get(scope, method, stream, "sequential")
            ended = [r for r in seq if r.end("sharpness/top_eigenvalue") is not None or r.end(SHARPNESS) is not None]
            if not ended:
                continue
            b.runs += ended
            rows_b.append(
                [
                    method,
                    stream,
                    str(len(ended)),
                    pm_end(ended, SHARPNESS, 4),
                    pm_end(ended, "sharpness/probe_hessian_trace", 3),
                    pm_end(ended, "sharpness/top_eigenvalue", 4),
                ]
            )
            if any(r.end(SHARPNESS) is None for r in ended):
                unmeasured.append(f"{method}/{stream}")
                continue
            saddles = [r for r in ended if (r.end(SHARPNESS) or 0.0) <= 0]
            if saddles:
                b.why.append(
                    f"{method}/{stream}: {len(saddles)} run(s) with a probe top eigenvalue at or below 0 (a saddle or a "
                    f"failed power iteration, never flat) left out: {', '.join(md_text(r.rel) for r in saddles)}"
                )
            kept = {r.seed: r.end(SHARPNESS) or 0.0 for r in ended if r not in saddles}
            if len(kept) >= MIN_SEEDS:
                sharp[method] = kept
        for f, by_method, higher, threshold, what in (
            (a, cka, True, HIGHER_CKA, "CKA SSL - supervised"),
            (b, sharp, False, FLATTER, "probe top eigenvalue supervised - SSL"),
        ):
            if SUPERVISED not in by_method:
                continue
            for method in (m for m in by_method if m != SUPERVISED):
                runs = ix.get(scope, method, stream, "sequential") + (ix.get(scope, method, stream, "joint") if f is a else [])
                why = gate(method, f"the {stream} stream", runs)
                if why:
                    f.why.append(why)
                    continue
                low, high = _against(by_method[SUPERVISED], by_method[method], higher)
                f.checks.append(
                    Check(
                        f"{stream}: {what.replace('SSL', method)}",
                        paired(low, high),
                        threshold,
                        above=True,
                        scale=1.0,
                        digits=3 if f is a else 4,
                        unit="",
                    )
                )
    if rows_a:
        a.lines += table(["method", "stream", "seeds", "CKA(sequential, joint)"], rows_a)
    if rows_b:
        b.lines += table(
            [
                "method",
                "stream",
                "seeds",
                "probe top eigenvalue (sequential)",
                "probe Hessian trace (sequential)",
                "own-loss top eigenvalue (sequential; not comparable)",
            ],
            rows_b,
        )
    if unmeasured:
        b.why.append(
            f"no comparable sharpness in {', '.join(unmeasured)}: these files store only `top_eigenvalue`, the "
            "largest-magnitude eigenvalue of each method's own training loss, which differs in scale between losses "
            "and counts a saddle as flat (the sharpness evaluator of protocol v2 stores `probe_top_eigenvalue`)"
        )
    for f, what in (
        (a, "sequential and joint runs with the `cka` evaluator"),
        (b, "sequential runs with the `sharpness` evaluator (probe_top_eigenvalue)"),
    ):
        f.judge()
        if f.verdict == NOT_TESTABLE and not f.why:
            f.missing.append(
                f"{what}, for {SUPERVISED} and an SSL method on the same stream ({ix.target_seeds(scope)} seeds each)"
            )
            f.to_run = (4 if f is a else 2) * ix.target_seeds(scope)
    return [a, b]
