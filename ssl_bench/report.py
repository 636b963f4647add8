"""``ssl-bench report``: the founding papers' claims checked against result files alone.

Six claims (Hu et al. ICLR 2022 on streaming SSL; S3L, "Small is beautiful"; Li, Efros and
Pathak on collapse), each with a verdict rule fixed in this module and printed in the report
next to the numbers, so the wording never depends on the outcome. A verdict is one of
``reproduced``, ``not reproduced`` or ``not testable`` (then the report names the missing
runs and estimates the compute they need from the runs already there).

Runs are grouped by protocol (name, version and hash), method, stream and strategy; seeds
are pooled. Only default-recipe runs count: a file that changed the method's recipe or options
(``variant``, see :mod:`ssl_bench.recipe`) is skipped with a warning. Every number is
recomputed from the stored arrays (:func:`ssl_bench.continual.summarize`,
:func:`ssl_bench.continual.cka_to_joint`); stored summary attributes are never read.
Numbers are mean ± standard deviation over seeds (ddof = 1); comparisons between two groups
use the seeds both have, and a group takes part only with at least :data:`MIN_SEEDS` of them.
Each claim is judged per protocol (claim 5 per pair of protocols). Data without domains has no domain
stream, so claims 1 and 2 take a protocol's domain-stream runs from its *domain twin* where it has none
of its own: the same protocol with the dataset option ``transform_domains`` (:func:`domain_twins`), as Hu
et al. measure the domain gap on other data (DomainNet) than the other streams' (ImageNet).

The output is deterministic: files are read in sorted order, floats have fixed formats,
there are no timestamps or absolute paths, and figures (PNG, matplotlib Agg) carry no
software or date metadata, so the same files give the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ssl_bench import continual
from ssl_bench.errors import UserError
from ssl_bench.protocol import load as load_protocol
from ssl_bench.protocol import shipped
from ssl_bench.results import Result

log = logging.getLogger(__name__)

MIN_SEEDS = 2  #: seeds a group needs (shared with the group it is compared with) to take part
STREAMS = ("instance", "class", "distant", "domain")
CONTRASTIVE = ("simclr", "moco")
NON_CONTRASTIVE = ("byol", "simsiam")
SUPERVISED = "supervised"  #: every other method counts as self-supervised
SMALL_GAP = 0.02  #: claim 1: a gap to joint of at most 2 accuracy points is "small"
LARGER_BY = 0.01  #: claim 1: "larger" = more than 1 point above both the instance and class gaps
MIN_GAP = 0.01  #: claim 2: below 1 point there is no gap to close
MIN_FRACTION = 0.1  #: claim 2: "closes part of the gap" = at least 10% of it
MIN_CORR_RUNS = 6  #: claim 4a: runs needed for a rank correlation
MAX_RHO = -0.5  #: claim 4a: "predicts" = Spearman rho at most -0.5 (more collapsed, less accurate)
FLOPS_TOLERANCE = 0.1  #: claim 5: "equal compute" = estimated training FLOPs within 10%

RULES = {
    "1": (
        f"reproduced if, for every one of {', '.join(CONTRASTIVE + NON_CONTRASTIVE)} with sequential and joint runs on "
        f"all four streams (at least one contrastive and one non-contrastive method needed), the gap (joint - "
        f"sequential final accuracy) is at most {SMALL_GAP * 100:.0f} points on instance and class, and the gap on "
        f"distant and on domain each exceeds both of those by more than {LARGER_BY * 100:.0f} point."
    ),
    "2": (
        f"on each SSL method's stream with the largest gap to joint (at least {MIN_GAP * 100:.0f} point), fraction "
        "closed = (acc_strategy - acc_sequential) / (acc_joint - acc_sequential); reproduced if replay and mas each "
        f"close at least {MIN_FRACTION:.0%} of the gap for every method where both ran."
    ),
    "3": (
        "reproduced if, on every stream where supervised and SSL sequential runs exist, every SSL method's mean "
        "forgetting_max is below the supervised method's."
    ),
    "4a": (
        "Spearman rank correlation between the collapse AUC after the last phase and the final accuracy, over the "
        "SSL runs of one stream (a stream sets the probes' task: accuracies compare only within it); reproduced if "
        f"rho <= {MAX_RHO} on every stream with at least {MIN_CORR_RUNS} runs of at least 2 methods."
    ),
    "4b": (
        "for every SSL method and stream with sequential and joint runs (joint has the sequential run's total "
        "steps), the difference AUC(joint) - AUC(sequential); reproduced if it is positive on average and in more "
        "than half of the pairs."
    ),
    "4c": (
        "for every SSL method and stream with hybrid and joint runs (hybrid: compute-matched by default), "
        "AUC(joint) - AUC(hybrid); reproduced if it is positive on average and in more than half of the pairs."
    ),
    "5": (
        f"protocols are paired when their dataset (but its root), stream, backbone and evaluation are identical, one has "
        f"train.stages and the other not, and their estimated training FLOPs (epochs_per_experience x sum over stages "
        f"of fraction x resolution^2) agree within {FLOPS_TOLERANCE:.0%}; reproduced if the staged protocol's mean final "
        "accuracy is higher for every method/stream/strategy run under both."
    ),
    "6a": (
        "linear CKA between the final backbones of sequential and joint runs of the same seed (stored `cka` "
        "features); reproduced if, on every stream where supervised has it, every SSL method's mean CKA is higher."
    ),
    "6b": (
        "top Hessian eigenvalue at the end of sequential runs (end/sharpness); reproduced if, on every stream where "
        "supervised has it, every SSL method's mean top eigenvalue is lower (flatter)."
    ),
}
CLAIMS = {
    "1": "Sequential SSL pre-training is nearly as good as joint training at equal compute on the instance and class "
    "streams; the gap is larger on the distant and domain streams (Hu et al. 2022).",
    "2": "Replay and MAS close part of the gap to joint where it is largest (Hu et al. 2022).",
    "3": "SSL forgets less than supervised training on the same stream (Hu et al. 2022).",
    "4a": "The collapse AUC predicts linear-probe accuracy across runs (Li, Efros, Pathak 2022).",
    "4b": "Continual training collapses less than multi-epoch training at equal compute (Li, Efros, Pathak 2022).",
    "4c": "A hybrid of continual and multi-epoch training collapses less than multi-epoch training (Li, Efros, Pathak 2022).",
    "5": "Pre-training at low resolution plus a short full-resolution phase beats full resolution only at equal compute "
    "(S3L, Cao & Wu 2021).",
    "6a": "Sequentially trained SSL models stay closer to the joint model (CKA) than supervised ones (Hu et al. 2022).",
    "6b": "SSL reaches flatter minima than supervised training (Hu et al. 2022).",
}
SECTIONS = (
    ("1", "Sequential vs joint", ("1",)),
    ("2", "Replay and MAS", ("2",)),
    ("3", "SSL forgets less than supervised", ("3",)),
    ("4", "Collapse", ("4a", "4b", "4c")),
    ("5", "S3L: small resolution first", ("5",)),
    ("6", "CKA and sharpness", ("6a", "6b")),
)
KEEP = ("metrics/acc_matrix", "metrics/acc_init", "metrics/collapse/auc", "phases/experiences")  #: arrays kept in memory
REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable"


@dataclass
class Run:
    """One result file: its attributes, arrays and numbers recomputed from them."""

    path: Path
    rel: str  #: path relative to the results folder (what the report prints)
    attrs: dict[str, Any]
    arrays: dict[str, Any]
    numbers: dict[str, float]
    protocol: dict[str, Any]
    scope: str = ""  #: protocol label, e.g. tinyimagenet-cpu-v1

    def __getitem__(self, key: str) -> Any:  # as results.Result, for continual.cka_to_joint
        return self.arrays[key]

    @property
    def seed(self) -> int:
        return int(self.attrs["seed"])

    @property
    def minutes(self) -> float | None:
        s = self.attrs.get("seconds")
        return float(s) / 60 if isinstance(s, (int, float)) else None

    @property
    def device(self) -> str:
        return str(self.attrs.get("device") or "unknown")

    def end(self, key: str) -> float | None:
        v = self.arrays.get(f"end/{key}")
        return None if v is None else float(np.asarray(v, dtype=float).reshape(-1)[0])


@dataclass
class Finding:
    claim: str
    scope: str
    verdict: str
    lines: list[str] = field(default_factory=list)  #: markdown: tables and the per-item checks
    runs: list[Run] = field(default_factory=list)  #: the runs the numbers come from (compute)
    missing: list[str] = field(default_factory=list)  #: what a test needs and is not there
    to_run: int = 0  #: runs that would make it testable (0: not counted)


# ---------------------------------------------------------------------------------------- reading


def collect(folder: str | Path) -> list[Run]:
    """Every readable result file under ``folder`` (recursively, sorted); unreadable ones are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"results folder '{folder}' does not exist")
    paths = sorted(folder.rglob("*.h5"))
    if not paths:
        raise UserError(f"no result files (*.h5) under '{folder}'")
    runs = []
    for p in paths:
        try:
            r = Result(p)
            numbers = continual.summarize(r.arrays)
            proto = json.loads(r.arrays.get("protocol_json") or "{}")
            for key in ("protocol", "protocol_version", "protocol_hash", "method", "stream", "strategy", "seed"):
                if key not in r.attrs:
                    raise UserError(f"no '{key}' attribute")
        except (UserError, OSError, KeyError, ValueError) as err:
            log.warning("skipped %s: %s", p, err)
            continue
        if r.attrs.get("variant"):  # the claims are checked on the methods' default recipes
            log.warning("skipped %s: a recipe or option variant (run identity %s)", p, r.attrs.get("run_identity"))
            continue
        arrays = {k: v for k, v in r.arrays.items() if k in KEEP or k.startswith("end/sharpness/")}
        for k in ("metrics/cka/features", "metrics/cka/index"):  # the last phase only: what CKA to joint compares
            if k in r.arrays:
                arrays[k] = np.asarray(r.arrays[k])[-1:]
        runs.append(Run(p, p.relative_to(folder).as_posix(), r.attrs, arrays, numbers, proto))
    if not runs:
        raise UserError(f"none of the {len(paths)} .h5 files under '{folder}' is a readable result file")
    labels: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        labels[f"{run.attrs['protocol']}-v{run.attrs['protocol_version']}"].add(run.attrs["protocol_hash"])
    for run in runs:
        label = f"{run.attrs['protocol']}-v{run.attrs['protocol_version']}"
        run.scope = label if len(labels[label]) == 1 else f"{label}#{run.attrs['protocol_hash'][:8]}"
    return runs


class Index:
    """Runs grouped by protocol, method, stream and strategy (seeds pooled, sorted by seed)."""

    def __init__(self, runs: list[Run]):
        self.runs = runs
        self.groups: dict[tuple[str, str, str, str], list[Run]] = defaultdict(list)
        for r in runs:
            self.groups[(r.scope, r.attrs["method"], r.attrs["stream"], r.attrs["strategy"])].append(r)
        for key, group in self.groups.items():
            group.sort(key=lambda r: (r.seed, r.rel))
            seeds = [r.seed for r in group]
            dupes = sorted({s for s in seeds if seeds.count(s) > 1})
            if dupes:
                files = ", ".join(r.rel for r in group if r.seed in dupes)
                raise UserError(f"{'/'.join(key)}: seed(s) {dupes} appear in more than one file ({files}); keep one")
        self.scopes = sorted({r.scope for r in runs})
        self.protocols = {r.scope: r.protocol for r in runs}
        #: the files' protocols and the shipped ones, so a missing domain twin can be named
        self.known = {p.label: p.model_dump(mode="json") for p in map(load_protocol, shipped())} | self.protocols
        self.twins = domain_twins(self.known)  #: scope -> its domain twin's scope

    def source(self, scope: str, stream: str) -> str:
        """The scope whose runs stand for ``scope``'s ``stream``: its own, or for a domain stream it has no
        runs of, its domain twin's."""
        if stream == "domain" and scope in self.twins and not any(k[0] == scope and k[2] == stream for k in self.groups):
            return self.twins[scope]
        return scope

    def get(self, scope: str, method: str, stream: str, strategy: str) -> list[Run]:
        return self.groups.get((scope, method, stream, strategy), [])

    def methods(self, scope: str, ssl_only: bool = False) -> list[str]:
        found = sorted({k[1] for k in self.groups if k[0] == scope})
        return [m for m in found if m != SUPERVISED] if ssl_only else found

    def streams(self, scope: str) -> list[str]:
        found = {k[2] for k in self.groups if k[0] == scope}
        return [s for s in STREAMS if s in found] + sorted(found - set(STREAMS))

    def paired(self, scope: str, method: str, stream: str, *strategies: str) -> dict[str, list[Run]] | None:
        """The groups of ``strategies`` restricted to the seeds all of them have; None under MIN_SEEDS."""
        groups = [self.get(scope, method, stream, s) for s in strategies]
        common = set.intersection(*({r.seed for r in g} for g in groups))
        if len(common) < MIN_SEEDS:
            return None
        return {s: [r for r in g if r.seed in common] for s, g in zip(strategies, groups)}

    def target_seeds(self, scope: str) -> int:
        return max(MIN_SEEDS, len(self.known.get(scope, {}).get("seeds", [])))

    def need(self, scope: str, method: str, stream: str, strategy: str, judged: str | None = None) -> tuple[str, int]:
        """A missing group as text (naming ``scope`` when it is not the ``judged`` one), and how many runs it lacks
        to reach the protocol's seeds."""
        have = len(self.get(scope, method, stream, strategy))
        target = self.target_seeds(scope)
        under = f" under {scope}" if judged not in (None, scope) else ""
        return f"{method}/{stream}/{strategy}{under} ({have} of {target} seeds)", max(0, target - have)


def domain_twins(protocols: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Per protocol scope, the scope of its domain twin among ``protocols``: the protocol that differs from
    it only in setting the dataset option ``transform_domains`` (besides name, version, description,
    defaults and seeds), e.g. tinyimagenet-cpu-domains for tinyimagenet-cpu."""

    def rest(p: dict[str, Any]) -> tuple[Any, str]:
        q = json.loads(json.dumps(p))
        for key in ("name", "version", "description", "defaults", "seeds"):
            q.pop(key, None)
        made = q.get("dataset", {}).get("options", {}).pop("transform_domains", None)
        return made, json.dumps(q, sort_keys=True)

    keyed = {s: rest(p) for s, p in sorted(protocols.items())}
    twin_of: dict[str, str] = {}  # the rest of a protocol -> the first (sorted) twin that sets transform_domains
    for t, (made, key) in keyed.items():
        if made:
            twin_of.setdefault(key, t)
    return {s: twin_of[key] for s, (made, key) in keyed.items() if not made and key in twin_of}


# ---------------------------------------------------------------------------------------- numbers


def stat(values: Iterable[Any]) -> tuple[float, float | None]:
    v = np.asarray(list(values), dtype=float)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def pm(values: Iterable[Any], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` with a fixed number of digits (std omitted for one value)."""
    m, s = stat(values)
    text = f"{m * scale:.{digits}f}"
    return text if s is None else f"{text} ± {s * scale:.{digits}f}"


def num(x: float, scale: float = 100.0, digits: int = 2) -> str:
    return f"{x * scale:.{digits}f}"


def acc(runs: list[Run]) -> list[float]:
    return [r.numbers["final_avg_acc"] for r in runs]


def learned(runs: list[Run]) -> str:
    """``mean ± std`` of final accuracy minus the same run's random-init accuracy, in points ("-" without init)."""
    if any("init_avg_acc" not in r.numbers for r in runs):
        return "-"
    return pm([r.numbers["final_avg_acc"] - r.numbers["init_avg_acc"] for r in runs])


def auc(runs: list[Run]) -> list[float] | None:
    values = [r.numbers.get("collapse_auc") for r in runs]
    return None if any(v is None for v in values) else [float(v) for v in values if v is not None]


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(x: ArrayLike) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pm_end(runs: list[Run], key: str, digits: int) -> str:
    values = [r.end(key) for r in runs]
    return "—" if not values or any(v is None for v in values) else pm(values, 1, digits)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _gaps(ix: Index, scope: str, method: str) -> dict[str, dict[str, list[Run]]]:
    """Per stream, the sequential and joint runs of ``method`` on their common seeds (streams with enough seeds),
    the domain stream's from the domain twin where ``scope`` has none (:meth:`Index.source`)."""
    out = {}
    for stream in STREAMS:
        pair = ix.paired(ix.source(scope, stream), method, stream, "sequential", "joint")
        if pair:
            out[stream] = pair
    return out


def _gap_values(pair: dict[str, list[Run]]) -> list[float]:
    return [j - s for s, j in zip(acc(pair["sequential"]), acc(pair["joint"]))]


def _verdict(checks: list[bool]) -> str:
    return REPRODUCED if all(checks) else NOT_REPRODUCED


def _mark(ok: bool) -> str:
    return "yes" if ok else "no"


# ---------------------------------------------------------------------------------------- claims


def claim1(ix: Index, scope: str, figures: Figures | None) -> Finding:
    rows, complete, checks, used, lines = [], {}, [], [], []
    for method in CONTRASTIVE + NON_CONTRASTIVE:
        gaps = _gaps(ix, scope, method)
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
                    pm(_gap_values(pair)),
                    learned(pair["sequential"]),
                ]
            )
        if len(gaps) == len(STREAMS):
            complete[method] = {s: stat(_gap_values(p))[0] for s, p in gaps.items()}
    f = Finding("1", scope, NOT_TESTABLE, runs=used)
    domains = ix.source(scope, "domain")
    made = ix.known[domains].get("dataset", {}).get("options", {}).get("transform_domains")
    if made:
        names = ", ".join(made) if isinstance(made, list) else "photo, grayscale, edges, cartoon"
        whose = "this protocol's data" if domains == scope else f"the domain stream's data (it runs under {domains})"
        f.lines += [
            f"The domains of {whose} are made from image transforms ({names}; dataset option "
            "`transform_domains`, `ssl_bench/domain_transforms.py`), not natural domains as DomainNet's.",
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
            f"{_mark(ok_small)}; distant {num(g['distant'])}, domain {num(g['domain'])} > "
            f"{num(small + LARGER_BY)}: {_mark(ok_large)}"
        )
    for family, methods in (("contrastive", CONTRASTIVE), ("non-contrastive", NON_CONTRASTIVE)):
        if any(m in complete for m in methods):
            continue
        method = max(methods, key=lambda m: (len(_gaps(ix, scope, m)), -methods.index(m)))  # the closest to complete
        parts = []
        for stream in (s for s in STREAMS if s not in _gaps(ix, scope, method)):
            for strategy in ("sequential", "joint"):
                text, n = ix.need(ix.source(scope, stream), method, stream, strategy, judged=scope)
                parts.append(text)
                f.to_run += n
        f.missing.append(f"a {family} method ({' or '.join(methods)}) on all four streams, e.g. {method}: {', '.join(parts)}")
    if not f.missing:
        f.verdict = _verdict(checks)
    f.lines += [""] + lines if lines else []
    if figures and rows:
        f.lines += ["", figures.gaps(scope, {m: _gaps(ix, scope, m) for m in CONTRASTIVE + NON_CONTRASTIVE})]
    return f


def claim2(ix: Index, scope: str) -> Finding:
    f = Finding("2", scope, NOT_TESTABLE)
    rows, checks, lines = [], [], []
    largest_any = None
    for method in ix.methods(scope, ssl_only=True):
        gaps = _gaps(ix, scope, method)
        if not gaps:
            continue
        means = {s: stat(_gap_values(p))[0] for s, p in gaps.items()}
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
                    pm(_gap_values(trio)),
                    pm([x - q for q, x in zip(acc(trio["sequential"]), acc(trio[strategy]))]),
                    f"{fractions[strategy]:.2f}",
                ]
            )
        if "replay" in fractions and "mas" in fractions:
            ok = bool(fractions["replay"] >= MIN_FRACTION and fractions["mas"] >= MIN_FRACTION)
            checks.append(ok)
            lines.append(
                f"- {method} on {stream}: replay closes {fractions['replay']:.2f}, mas {fractions['mas']:.2f} "
                f"of the gap, both >= {MIN_FRACTION}: {_mark(ok)}"
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
        f.verdict, f.missing, f.to_run = _verdict(checks), [], 0
    elif largest_any is None:
        f.missing.append("sequential and joint runs of an SSL method on some stream (claim 1's runs)")
    elif not f.missing:
        f.missing.append(
            f"a stream where an SSL method's gap to joint is at least {num(MIN_GAP)} points "
            f"(largest here: {largest_any[0]} on {largest_any[1]}, {num(largest_any[2])})"
        )
    return f


def claim3(ix: Index, scope: str, figures: Figures | None) -> Finding:
    f = Finding("3", scope, NOT_TESTABLE)
    rows, checks, lines, panels = [], [], [], {}
    for stream in ix.streams(scope):
        sequential = {
            m: [r for r in ix.get(scope, m, stream, "sequential") if "forgetting_max" in r.numbers] for m in ix.methods(scope)
        }
        sup = sequential.pop(SUPERVISED, [])
        ssl = sequential
        ssl = {m: g for m, g in ssl.items() if len(g) >= MIN_SEEDS}
        if len(sup) < MIN_SEEDS:
            if ssl:
                text, n = ix.need(scope, SUPERVISED, stream, "sequential")
                f.missing.append(text)
                f.to_run += n
            continue
        if not ssl:
            continue
        sup_forget = stat(r.numbers["forgetting_max"] for r in sup)[0]
        for method, group in [(SUPERVISED, sup), *ssl.items()]:
            f.runs += group
            rows.append(
                [
                    method,
                    stream,
                    str(len(group)),
                    pm(acc(group)),
                    pm(r.numbers["forgetting_max"] for r in group),
                    pm(r.numbers["bwt"] for r in group),
                ]
            )
            panels[(stream, method)] = group
            if method != SUPERVISED:
                forget = stat(r.numbers["forgetting_max"] for r in group)[0]
                ok = forget < sup_forget
                checks.append(ok)
                lines.append(f"- {stream}: {method} forgetting {num(forget)} < supervised {num(sup_forget)}: {_mark(ok)}")
    if rows:
        f.lines += table(["method", "stream", "seeds", "final acc %", "forgetting_max (points)", "BWT (points)"], rows)
    f.lines += [""] + lines if lines else []
    if checks:
        f.verdict, f.missing, f.to_run = _verdict(checks), [], 0
    elif not f.missing:
        f.missing.append(
            f"sequential runs of {SUPERVISED} and of an SSL method on the same stream ({ix.target_seeds(scope)} seeds each)"
        )
        f.to_run = 2 * ix.target_seeds(scope)
    if figures and panels:
        f.lines += ["", figures.matrices(scope, panels)]
    return f


def claim4(ix: Index, scope: str, figures: Figures | None) -> list[Finding]:
    # 4a: rank correlation over the runs of each stream
    a = Finding("4a", scope, NOT_TESTABLE)
    ssl = [r for r in ix.runs if r.scope == scope and r.attrs["method"] != SUPERVISED and "collapse_auc" in r.numbers]
    checks, constant = [], []
    for stream in ix.streams(scope):
        points = [r for r in ssl if r.attrs["stream"] == stream]
        if not points:
            continue
        x = [r.numbers["collapse_auc"] for r in points]
        y = [r.numbers["final_avg_acc"] for r in points]
        rho, methods = spearman(x, y), sorted({r.attrs["method"] for r in points})
        a.runs += points
        a.lines.append(
            f"- {stream}: Spearman rho = {rho:.3f} over {len(points)} runs of {', '.join(methods)}; collapse AUC "
            f"{min(x):.3f} to {max(x):.3f}, final accuracy {num(min(y))} to {num(max(y))} %"
        )
        if len(points) >= MIN_CORR_RUNS and len(methods) >= 2:
            if np.isfinite(rho):
                checks.append(rho <= MAX_RHO)
                a.lines[-1] += f"; rho <= {MAX_RHO}: {_mark(rho <= MAX_RHO)}"
            else:
                constant.append(stream)
    if checks:
        a.verdict = _verdict(checks)
    elif constant:
        a.missing.append(f"runs whose collapse AUC or accuracy differ (all equal on {', '.join(constant)})")
    if ssl and figures:
        a.lines += ["", figures.scatter(scope, ssl)]
    if a.verdict == NOT_TESTABLE and not a.missing:
        a.missing.append(
            f"at least {MIN_CORR_RUNS} SSL runs of at least 2 methods on one stream, with the `collapse` evaluator "
            f"(here: {len(ssl)} runs, {len({r.attrs['method'] for r in ssl})} method(s))"
        )
        a.to_run = max(MIN_CORR_RUNS - len(ssl), ix.target_seeds(scope))
    return [a, _collapse_pairs(ix, scope, "4b", "sequential"), _collapse_pairs(ix, scope, "4c", "hybrid")]


def _collapse_pairs(ix: Index, scope: str, claim: str, other: str) -> Finding:
    """AUC(joint) - AUC(other) per SSL method and stream."""
    f = Finding(claim, scope, NOT_TESTABLE)
    rows, diffs = [], []
    for method in ix.methods(scope, ssl_only=True):
        for stream in ix.streams(scope):
            pair = ix.paired(scope, method, stream, other, "joint")
            if pair is None:
                if ix.get(scope, method, stream, other) or (other == "hybrid" and ix.get(scope, method, stream, "joint")):
                    for strategy in (other, "joint"):
                        if len(ix.get(scope, method, stream, strategy)) < MIN_SEEDS:
                            text, n = ix.need(scope, method, stream, strategy)
                            f.missing.append(text)
                            f.to_run += n
                continue
            a_other, a_joint = auc(pair[other]), auc(pair["joint"])
            if a_other is None or a_joint is None:
                f.missing.append(f"the `collapse` evaluator in {method}/{stream}/{other} and joint runs")
                continue
            d = [j - o for o, j in zip(a_other, a_joint)]
            diffs.append(stat(d)[0])
            f.runs += pair[other] + pair["joint"]
            rows.append(
                [
                    method,
                    stream,
                    str(len(d)),
                    pm(a_other, 1, 3),
                    pm(a_joint, 1, 3),
                    pm(d, 1, 3),
                    pm(acc(pair[other])),
                    pm(acc(pair["joint"])),
                ]
            )
    if rows:
        f.lines += table(
            ["method", "stream", "seeds", f"AUC {other}", "AUC joint", f"AUC joint - {other}", f"{other} acc %", "joint acc %"],
            rows,
        )
    if diffs:
        mean, lower = float(np.mean(diffs)), sum(d > 0 for d in diffs)
        ok = mean > 0 and lower > len(diffs) / 2
        f.verdict, f.missing, f.to_run = _verdict([ok]), [], 0
        f.lines.append(
            f"\n- mean AUC joint - {other} {mean:.3f} > 0 and {other} lower in {lower} of {len(diffs)} "
            f"pairs (more than half): {_mark(ok)}"
        )
    elif not f.missing:
        f.missing.append(
            f"{other} and joint runs of an SSL method on one stream, with the `collapse` evaluator "
            f"({ix.target_seeds(scope)} seeds each)"
        )
        f.to_run = 2 * ix.target_seeds(scope)
    return f


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
                lines.append(f"- {method}/{stream}/{strategy}: staged {num(ma)} > full {num(mb)}: {_mark(ma > mb)}")
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
                f.verdict = _verdict(checks)
            else:
                f.missing.append(f"the same method/stream/strategy under both protocols with {MIN_SEEDS}+ seeds each")
                f.to_run = 2 * ix.target_seeds(s)
            findings.append(f)
    return findings


def claim6(ix: Index, scope: str) -> list[Finding]:
    a, b = Finding("6a", scope, NOT_TESTABLE), Finding("6b", scope, NOT_TESTABLE)
    rows_a, rows_b, checks_a, checks_b, lines_a, lines_b = [], [], [], [], [], []
    for stream in ix.streams(scope):
        cka: dict[str, list[float]] = {}
        sharp: dict[str, list[Run]] = {}
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
                    _pm_end(group, "sharpness/top_eigenvalue", 4),
                    _pm_end(group, "sharpness/hessian_trace", 3),
                    _pm_end(joint_runs, "sharpness/top_eigenvalue", 4),
                ]
            )
        if SUPERVISED in cka:
            ref = stat(cka[SUPERVISED])[0]
            for method in (m for m in cka if m != SUPERVISED):
                ok = stat(cka[method])[0] > ref
                checks_a.append(ok)
                lines_a.append(f"- {stream}: {method} CKA {stat(cka[method])[0]:.3f} > supervised {ref:.3f}: {_mark(ok)}")
        if SUPERVISED in sharp:
            ref = stat(r.end("sharpness/top_eigenvalue") for r in sharp[SUPERVISED])[0]
            for method in (m for m in sharp if m != SUPERVISED):
                mine = stat(r.end("sharpness/top_eigenvalue") for r in sharp[method])[0]
                checks_b.append(mine < ref)
                lines_b.append(f"- {stream}: {method} top eigenvalue {mine:.4g} < supervised {ref:.4g}: {_mark(mine < ref)}")
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
            f.verdict = _verdict(checks)
        else:
            f.missing.append(
                f"{what}, for {SUPERVISED} and an SSL method on the same stream ({ix.target_seeds(scope)} seeds each)"
            )
            f.to_run = (4 if f is a else 2) * ix.target_seeds(scope)
    return [a, b]


# ---------------------------------------------------------------------------------------- figures


class Figures:
    """PNG figures written into ``folder``; markdown links relative to ``link_base``."""

    def __init__(self, folder: Path, link_base: Path):
        import matplotlib

        matplotlib.use("Agg")
        self.folder, self.link_base = Path(folder), Path(link_base)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create figures folder '{folder}': {err.strerror or err}") from None

    def _save(self, fig: Any, name: str, alt: str) -> str:
        import matplotlib.pyplot as plt

        path = self.folder / name
        fig.savefig(path, dpi=100, metadata={"Software": None})
        plt.close(fig)
        return f"![{alt}]({Path(os.path.relpath(path, self.link_base)).as_posix()})"

    @staticmethod
    def _name(kind: str, scope: str) -> str:
        return f"{kind}__{''.join(c if c.isalnum() or c in '-_.' else '_' for c in scope)}.png"

    def gaps(self, scope: str, gaps: dict[str, dict[str, dict[str, list[Run]]]]) -> str:
        import matplotlib.pyplot as plt

        methods = [m for m in gaps if gaps[m]]
        fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
        width = 0.8 / max(1, len(methods))
        for i, m in enumerate(methods):
            xs = [k + i * width for k, s in enumerate(STREAMS) if s in gaps[m]]
            stats = [stat(_gap_values(gaps[m][s])) for s in STREAMS if s in gaps[m]]
            ax.bar(xs, [100 * mu for mu, _ in stats], width, yerr=[100 * (sd or 0) for _, sd in stats], label=m, capsize=2)
        ax.axhline(100 * SMALL_GAP, color="grey", lw=0.8, ls="--")
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(STREAMS))], STREAMS)
        ax.set_ylabel("joint - sequential (points)")
        ax.set_title(f"Gap to joint, {scope}")
        ax.legend(fontsize=8)
        return self._save(fig, self._name("claim1_gap", scope), f"gap to joint per stream, {scope}")

    def matrices(self, scope: str, panels: dict[tuple[str, str], list[Run]]) -> str:
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
        return self._save(fig, self._name("claim3_acc_matrices", scope), f"accuracy matrices, {scope}")

    def scatter(self, scope: str, points: list[Run]) -> str:
        import matplotlib.pyplot as plt

        streams = list(dict.fromkeys(r.attrs["stream"] for r in points))  # one panel each: accuracies differ by task
        fig, axes = plt.subplots(1, len(streams), figsize=(4.2 * len(streams), 3.8), layout="constrained", squeeze=False)
        for ax, stream in zip(axes[0], streams, strict=True):
            for method in sorted({r.attrs["method"] for r in points}):  # every method in every panel: same colours
                mine = [r for r in points if r.attrs["method"] == method and r.attrs["stream"] == stream]
                ax.scatter(
                    [r.numbers["collapse_auc"] for r in mine],
                    [100 * r.numbers["final_avg_acc"] for r in mine],
                    label=method if mine else None,
                    s=18,
                )
            ax.set_title(f"{stream} stream", fontsize=9)
            ax.legend(fontsize=8)
        axes[0][0].set_ylabel("final accuracy %")
        fig.supxlabel("collapse AUC after the last phase (higher = more collapsed)", fontsize=9)
        fig.suptitle(f"Collapse vs accuracy, {scope}", fontsize=9)
        return self._save(fig, self._name("claim4_collapse", scope), f"collapse AUC vs accuracy, {scope}")


# ---------------------------------------------------------------------------------------- report


def findings(runs: list[Run], figures: Figures | None = None) -> list[Finding]:
    ix = Index(runs)
    out: list[Finding] = []
    twinned = {t for b, t in ix.twins.items() if b in ix.scopes}
    own = [s for s in ix.scopes if s not in twinned]  # a domain twin's claims 1 and 2 are its base's, if it has files
    per_scope: list[tuple[list[str], Callable[[str], list[Finding]]]] = [
        (own, lambda s: [claim1(ix, s, figures)]),
        (own, lambda s: [claim2(ix, s)]),
        (ix.scopes, lambda s: [claim3(ix, s, figures)]),
        (ix.scopes, lambda s: claim4(ix, s, figures)),
        (ix.scopes, lambda s: claim6(ix, s)),
    ]
    for scopes, make in per_scope:
        for scope in scopes:
            out += make(scope)
    out += claim5(ix)
    order = [c for _, _, claims in SECTIONS for c in claims]
    return sorted(out, key=lambda f: order.index(f.claim))  # stable: scopes stay sorted within a claim


def _compute(runs: list[Run]) -> str:
    if not runs:
        return "no runs"
    unique = {r.rel: r for r in runs}.values()
    devices = sorted({r.device for r in unique})
    known = [r.minutes for r in unique if r.minutes is not None]
    text = f"{len(unique)} runs on {', '.join(devices)}, {sum(known):.1f} min"
    unknown = len(unique) - len(known)
    return text + (f" ({unknown} without a recorded time)" if unknown else "")


def _budget(ix: Index, f: Finding) -> str:
    if not f.to_run:
        return ""
    scope = f.scope.split(" vs ")[0]
    minutes = [r.minutes for r in ix.runs if r.scope == scope and r.minutes is not None]
    if scope not in ix.scopes or not minutes:
        return f" To test it: about {f.to_run} more runs."
    per = float(np.median(minutes))
    devices = ", ".join(sorted({r.device for r in ix.runs if r.scope == scope}))
    return (
        f" To test it: about {f.to_run} more runs, about {f.to_run * per:.0f} min at this protocol's median "
        f"{per:.1f} min per run ({devices})."
    )


def render(runs: list[Run], figures: Figures | None = None) -> str:
    """The findings report as markdown (deterministic for the same files)."""
    ix = Index(runs)
    found = findings(runs, figures)
    out = [
        "# Findings: what ssl-bench reproduces",
        "",
        f"Generated by `ssl-bench report` from {len(runs)} result files under {len(ix.scopes)} protocol(s); the same "
        "files give the same report. Every number is recomputed from the stored arrays "
        "(`ssl_bench.continual`), never taken from stored summaries. Numbers are mean ± standard deviation over "
        f"seeds (ddof = 1); accuracies are the final linear-probe accuracy averaged over experiences, in %. A "
        f"comparison uses the seeds both sides have, at least {MIN_SEEDS}, and a difference (gap) is taken seed by seed, "
        "then averaged, so its ± is the spread of the paired differences. Each claim's verdict rule is fixed in "
        "`ssl_bench/report.py` and printed below; a claim is judged per protocol.",
        "",
        "## Verdicts",
        "",
    ]
    out += table(
        ["claim", "protocol", "verdict", "runs", "compute"],
        [[f.claim, f.scope, f"**{f.verdict}**", str(len({r.rel for r in f.runs})), _compute(f.runs)] for f in found],
    )
    out += ["", "## Compute", ""]
    out += table(
        ["protocol", "runs", "compute"],
        [[s, str(len([r for r in runs if r.scope == s])), _compute([r for r in runs if r.scope == s])] for s in ix.scopes],
    )
    for number, title, claims in SECTIONS:
        out += ["", f"## {number}. {title}"]
        for claim in claims:
            out += ["", f"**Claim {claim}.** {CLAIMS[claim]}", "", f"**Rule.** {RULES[claim]}"]
            for f in (f for f in found if f.claim == claim):
                out += ["", f"### {claim} — {f.scope}: {f.verdict}", ""]
                out += f.lines + ([""] if f.lines else [])
                out.append(f"Compute: {_compute(f.runs)}.")
                if f.verdict == NOT_TESTABLE:
                    out += ["", "Missing: " + "; ".join(f.missing) + "." + _budget(ix, f)]
    out += ["", "## Runs", ""]
    out += table(
        ["protocol", "method", "stream", "strategy", "seeds", "device", "minutes"],
        [
            [
                *key,
                ", ".join(str(r.seed) for r in group),
                ", ".join(sorted({r.device for r in group})),
                f"{sum(r.minutes or 0.0 for r in group):.1f}",
            ]
            for key, group in sorted(ix.groups.items())
        ],
    )
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)) + "\n"


def report(folder: str | Path, output: str | Path | None = None, figures: str | Path | None = None) -> str:
    """Read the result files under ``folder`` and return (and write to ``output``) the findings report."""
    runs = collect(folder)
    link_base = Path(output).parent if output else Path(".")
    text = render(runs, Figures(Path(figures), link_base) if figures else None)
    if output is not None:
        try:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_text(text, encoding="utf-8")
        except OSError as err:
            raise UserError(f"cannot write '{output}': {err.strerror or err}") from None
    return text
