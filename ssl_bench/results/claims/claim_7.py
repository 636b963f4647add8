"""Claim 7 (Li, Efros & Pathak 2022): a non-contrastive Siamese method's partial dimensional collapse grows when
the model is small relative to the data.

Li et al. show it for SimSiam: at a fixed ResNet, the collapse of its representation grows with the share of
ImageNet it trains on, and at fixed data a wider model collapses less; their collapse metric tracks the linear
probe. Here the runs come from protocol *twins* that differ only in the training images per class
(``dataset.options.train_per_class``, e.g. tinyimagenet-cpu-d10 / -d30 / tinyimagenet-cpu) or in the backbone's
width (``backbone.options.width``, e.g. tinyimagenet-cpu-w050), and possibly in the epochs, warm-up scale and
probe training samples that follow from the data size (:func:`twin_key`, :data:`LOOSE`). Every non-contrastive
method (base.FAMILIES) with runs under two or more twins is judged, on each stream and strategy the twins share.

Precondition, deliberately different from the other claims: a fully collapsed model does not learn, so requiring
every configuration to learn would exclude the claimed effect itself. The method must learn (gain over random init
at least 2 points, interval above 0) in at least one of the two configurations compared, which shows that the
budget trains it at all; otherwise collapse cannot be told from not training.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from ssl_bench.results.claims.base import (
    CONTRADICTED,
    MIN_SEEDS,
    NON_CONTRASTIVE,
    NOT_TESTABLE,
    Check,
    Figures,
    Finding,
    Index,
    RunFile,
    acc,
    auc,
    canonical,
    family,
    gate,
    paired,
    pm,
    table,
)

#: claim 7: "collapse grows" = AUC(more data) - AUC(less data), and AUC(narrower) - AUC(wider), seed by seed, have
#: their 95% interval above 0 (the paper reports the direction; the size depends on the model and budget)
MORE_COLLAPSED = 0.0
DATA, WIDTH = ("dataset", "options", "train_per_class"), ("backbone", "options", "width")
#: what twins may differ in besides data and width: names, seeds, and the epochs, warm-up scale and probe samples
#: that hold the steps and the warm-up share fixed when the data size changes (tinyimagenet-cpu-d10: 40 epochs)
LOOSE = (
    ("name",),
    ("version",),
    ("description",),
    ("seeds",),
    ("defaults",),
    ("recipe",),
    ("domain_protocol",),
    ("train", "epochs_per_experience"),
    ("train", "warmup_scale"),
    ("eval", "probe_train_per_experience"),
)

SECTION = ("7", "Collapse against model and data size")
CLAIMS = {
    "7": "SimSiam's partial dimensional collapse grows when the model is small relative to the data: at a fixed width "
    "the collapse rises with the dataset size, and at fixed data it falls with the width (Li, Efros & Pathak 2022).",
}
RULES = {
    "7": (
        "over protocol twins that differ only in dataset.options.train_per_class or backbone.options.width (and the "
        "epochs and probe samples that follow) and whose runs train as many steps, for every non-contrastive "
        "method and stream/strategy run under two twins that differ in one of them: the last phase's collapse AUC "
        "of the larger-data run minus the smaller-data run's (same width), and of the narrower run minus the wider "
        f"run's (same data), seed by seed, has its 95% interval above {MORE_COLLAPSED:.0f} (reproduced) or below it "
        "(contradicted); each pair needs the method to learn in at least one of its two configurations (gain over "
        "random init at least 2 points, interval above 0). Combined over pairs: contradicted if any is, reproduced "
        "if all are, otherwise inconclusive. The probe accuracy is shown beside each AUC."
    ),
}

SCOPES = "pairs"  # judged once over all protocols: groups of twins


def judge(ix: Index, scope: str | None, figures: Figures | None) -> list[Finding]:
    return claim7(ix)


def _get(p: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        p = p.get(key, {}) if isinstance(p, dict) else {}
    return None if p == {} else p


def twin_key(p: dict[str, Any]) -> str:
    """The protocol without what twins may differ in (data size, width and :data:`LOOSE`)."""
    q = canonical(p)
    for path in (DATA, WIDTH, *LOOSE):
        node = q
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return json.dumps(q, sort_keys=True)


def size(p: dict[str, Any]) -> tuple[float, float]:
    """(training images per class, width); a missing option counts as all images (infinity) and width 1."""
    data, width = _get(p, DATA), _get(p, WIDTH)
    return float(data if data is not None else "inf"), float(width if width is not None else 1.0)


def claim7(ix: Index) -> list[Finding]:
    families: dict[tuple[str, tuple[int, ...]], list[str]] = defaultdict(list)
    for scope in ix.scopes:  # twins train as many steps: a longer budget (LOOSE's epochs) is another family
        families[(twin_key(ix.protocols[scope]), steps([r for r in ix.runs if r.scope == scope]))].append(scope)
    groups = [sorted(g) for g in families.values() if len({size(ix.protocols[s]) for s in g}) > 1]
    if not groups:
        return [
            Finding(
                "7",
                "all",
                NOT_TESTABLE,
                missing=[
                    "runs of a non-contrastive method (e.g. simsiam) under protocols that differ only in "
                    "dataset.options.train_per_class (e.g. tinyimagenet-cpu-d10, tinyimagenet-cpu-d30 and "
                    "tinyimagenet-cpu) or in backbone.options.width (e.g. tinyimagenet-cpu-w050)"
                ],
            )
        ]
    return [_group(ix, g) for g in groups]


def _label(ix: Index, scope: str) -> str:
    data, width = size(ix.protocols[scope])
    return f"{scope} ({'all' if data == float('inf') else int(data)} per class, x{width:g})"


def _group(ix: Index, scopes: list[str]) -> Finding:
    f = Finding("7", " / ".join(scopes), NOT_TESTABLE)
    rows = []
    keys = sorted({k[1:] for k in ix.groups if k[0] in scopes and family(k[1]) == NON_CONTRASTIVE})
    for method, stream, strategy in keys:
        runs = {s: ix.get(s, method, stream, strategy) for s in scopes}
        runs = {s: [r for r in g if "collapse_auc" in r.numbers] for s, g in runs.items()}
        runs = {s: g for s, g in runs.items() if len(g) >= MIN_SEEDS}
        for s, g in sorted(runs.items(), key=lambda kv: size(ix.protocols[kv[0]])):
            f.runs += g
            rows.append(
                [
                    method,
                    stream,
                    strategy,
                    _label(ix, s),
                    str(len(g)),
                    f"{sum(r.attrs.get('steps', 0) for r in g) / len(g):.0f}",
                    pm(auc(g) or [], 1, 3),
                    pm(acc(g)),
                ]
            )
        for a, b in _pairs(ix, sorted(runs)):
            f.checks.append(_check(ix, method, stream, strategy, a, b, runs[a], runs[b], f))
    if rows:
        f.lines += table(
            ["method", "stream", "strategy", "protocol (data, width)", "seeds", "steps", "collapse AUC", "final acc %"],
            rows,
        )
    f.judge()
    if not f.checks and not f.why:
        f.missing.append(
            "runs of a non-contrastive method with the `collapse` evaluator under two of "
            f"{', '.join(scopes)} on the same stream and strategy ({MIN_SEEDS}+ seeds each)"
        )
    if f.verdict != CONTRADICTED and f.why and not any(c.verdict != NOT_TESTABLE for c in f.checks):
        f.verdict = NOT_TESTABLE
    return f


def steps(runs: list[RunFile]) -> tuple[int, ...]:
    """The training steps of ``runs``: data twins hold them fixed (tinyimagenet-cpu-d10 trains 40 epochs of 750
    images as the base trains 4 of 7,500), so runs that trained longer are another budget, never a twin."""
    return tuple(sorted({int(r.attrs.get("steps", 0)) for r in runs}))


def _pairs(ix: Index, scopes: list[str]) -> list[tuple[str, str]]:
    """(expected less collapsed, expected more collapsed): neighbours in data size at one width, and in width
    at one data size."""
    out = []
    sizes = {s: size(ix.protocols[s]) for s in scopes}
    for fixed, varied in ((1, 0), (0, 1)):
        lines: dict[float, list[str]] = defaultdict(list)
        for s in scopes:
            lines[sizes[s][fixed]].append(s)
        for _, members in sorted(lines.items()):
            ordered = sorted(members, key=lambda s: sizes[s][varied])
            for lo, hi in zip(ordered, ordered[1:]):
                if sizes[lo][varied] == sizes[hi][varied]:
                    continue
                # more data collapses more; a wider model collapses less
                out.append((lo, hi) if varied == 0 else (hi, lo))
    return out


def _check(
    ix: Index, method: str, stream: str, strategy: str, less: str, more: str, a: list[RunFile], b: list[RunFile], f: Finding
) -> Check:
    seeds = sorted({r.seed for r in a} & {r.seed for r in b})
    a, b = [r for r in a if r.seed in seeds], [r for r in b if r.seed in seeds]
    what = f"{method}/{stream}/{strategy}: AUC {_label(ix, more)} - AUC {_label(ix, less)}"
    why_a, why_b = gate(method, less, a), gate(method, more, b)
    why = f"{method} learns in neither: {why_a}; {why_b}" if why_a and why_b else ""
    if why:  # each configuration's reason once in the summary line, though it takes part in two pairs
        f.why += [w for w in (why_a, why_b) if w not in f.why]
    if len(seeds) < MIN_SEEDS:
        why = why or f"fewer than {MIN_SEEDS} common seeds"
    return Check(what, paired(auc(a) or [], auc(b) or []), MORE_COLLAPSED, above=True, scale=1.0, digits=3, unit="", why=why)
