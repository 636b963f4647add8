"""Claims 6a-6b (Hu et al. 2022): sequential SSL stays closer to joint (CKA) and reaches flatter minima than
supervised training."""

from __future__ import annotations

from ssl_bench.errors import UserError
from ssl_bench.results import continual
from ssl_bench.results.claims.base import (
    MIN_SEEDS,
    NOT_TESTABLE,
    SUPERVISED,
    Figures,
    Finding,
    Index,
    RunFile,
    log,
    mark,
    pm,
    pm_end,
    stat,
    table,
    verdict_of,
)

SECTION = ("6", "CKA and sharpness")
CLAIMS = {
    "6a": "Sequentially trained SSL models stay closer to the joint model (CKA) than supervised ones (Hu et al. 2022).",
    "6b": "SSL reaches flatter minima than supervised training (Hu et al. 2022).",
}
RULES = {
    "6a": (
        "linear CKA between the final backbones of sequential and joint runs of the same seed (stored `cka` "
        "features); reproduced if, on every stream where supervised has it, every SSL method's mean CKA is higher."
    ),
    "6b": (
        "top Hessian eigenvalue at the end of sequential runs (end/sharpness); reproduced if, on every stream where "
        "supervised has it, every SSL method's mean top eigenvalue is lower (flatter)."
    ),
}


SCOPES = "each"


def judge(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    return claim6(ix, scope)


def claim6(ix: Index, scope: str) -> list[Finding]:
    a, b = Finding("6a", scope, NOT_TESTABLE), Finding("6b", scope, NOT_TESTABLE)
    rows_a, rows_b, checks_a, checks_b, lines_a, lines_b = [], [], [], [], [], []
    for stream in ix.streams(scope):
        cka: dict[str, list[float]] = {}
        sharp: dict[str, list[RunFile]] = {}
        for method in ix.methods(scope):
            pair = ix.paired(scope, method, stream, "sequential", "joint")
            if pair:
                values = []
                for seq, joint in zip(pair["sequential"], pair["joint"]):
                    try:
                        v = continual.cka_to_joint(seq, joint)
                    except UserError as err:
                        log.warning("CKA of %s: %s", seq.rel, err)
                        v = None
                    if v is not None:
                        values.append(v)
                if len(values) >= MIN_SEEDS:
                    cka[method] = values
                    a.runs += pair["sequential"] + pair["joint"]
            ended = [r for r in ix.get(scope, method, stream, "sequential") if r.end("sharpness/top_eigenvalue") is not None]
            if len(ended) >= MIN_SEEDS:
                sharp[method] = ended
        for method, values in cka.items():
            rows_a.append([method, stream, str(len(values)), pm(values, 1, 3)])
        for method, group in sharp.items():
            joint_runs = [r for r in ix.get(scope, method, stream, "joint") if r.end("sharpness/top_eigenvalue") is not None]
            b.runs += group + joint_runs
            rows_b.append(
                [
                    method,
                    stream,
                    str(len(group)),
                    pm_end(group, "sharpness/top_eigenvalue", 4),
                    pm_end(group, "sharpness/hessian_trace", 3),
                    pm_end(joint_runs, "sharpness/top_eigenvalue", 4),
                ]
            )
        if SUPERVISED in cka:
            ref = stat(cka[SUPERVISED])[0]
            for method in (m for m in cka if m != SUPERVISED):
                ok = stat(cka[method])[0] > ref
                checks_a.append(ok)
                lines_a.append(f"- {stream}: {method} CKA {stat(cka[method])[0]:.3f} > supervised {ref:.3f}: {mark(ok)}")
        if SUPERVISED in sharp:
            ref = stat(r.end("sharpness/top_eigenvalue") for r in sharp[SUPERVISED])[0]
            for method in (m for m in sharp if m != SUPERVISED):
                mine = stat(r.end("sharpness/top_eigenvalue") for r in sharp[method])[0]
                checks_b.append(mine < ref)
                lines_b.append(f"- {stream}: {method} top eigenvalue {mine:.4g} < supervised {ref:.4g}: {mark(mine < ref)}")
    if rows_a:
        a.lines += table(["method", "stream", "seeds", "CKA(sequential, joint)"], rows_a)
    if rows_b:
        b.lines += table(
            ["method", "stream", "seeds", "top eigenvalue (sequential)", "Hessian trace (sequential)", "top eigenvalue (joint)"],
            rows_b,
        )
        b.lines.append(
            "\nEach model's sharpness is measured on its own training loss (the SSL loss, or cross-entropy for "
            "supervised), so the two scales are not strictly comparable."
        )
    for f, checks, lines, what in (
        (a, checks_a, lines_a, "sequential and joint runs with the `cka` evaluator"),
        (b, checks_b, lines_b, "sequential runs with the `sharpness` evaluator"),
    ):
        f.lines += [""] + lines if lines else []
        if checks:
            f.verdict = verdict_of(checks)
        else:
            f.missing.append(
                f"{what}, for {SUPERVISED} and an SSL method on the same stream ({ix.target_seeds(scope)} seeds each)"
            )
            f.to_run = (4 if f is a else 2) * ix.target_seeds(scope)
    return [a, b]
