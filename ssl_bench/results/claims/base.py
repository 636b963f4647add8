"""What every claim shares: the result files read once (:class:`RunFile`, :func:`collect`), grouped
(:class:`Index`), the method families, the statistics (intervals, verdicts, the learning precondition), the
table helpers, a :class:`Finding` per claim and protocol, and the :class:`Figures` folder.

Statistics. Every comparison is paired by seed: the difference is taken seed by seed (the seeds both sides
have) and its 95% interval is Student's t-interval over those seed differences, mean ± t(0.975, n-1) · sd / √n
(:func:`t_interval`; with n seeds, n - 1 degrees of freedom, exact quantiles, no scipy). A t-interval rather than a
bootstrap because a percentile bootstrap over 3 seeds has only 10 distinct resamples and is too narrow; the
t-interval assumes roughly normal seed-to-seed noise, which is what re-running a seed shows. Rank correlations
(claim 4a) are the one exception: their interval is a cluster bootstrap over runs (:func:`within_rank_correlation`).

A :class:`Check` compares one interval with its rule's threshold and gives one of four verdicts: **reproduced**
when the interval lies wholly on the claimed side, **contradicted** when it lies wholly on the other side,
**inconclusive** when it contains the threshold (with the number of seeds that would decide at the observed
spread, :meth:`Interval.seeds_needed`), and **not testable** when a precondition fails or runs are missing.
A claim over several items (streams, methods, measures) combines them with :func:`combine`: contradicted if
any item is, reproduced only if every item is, not testable when no item is testable, otherwise inconclusive.

Precondition (:func:`learning`): a method takes part in a comparison only if it learned there, i.e. its final
held-out probe accuracy gained at least :data:`MIN_GAIN` over the same run's random-init backbone
(``init_avg_acc``, stored in every file), with the interval above 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ssl_bench.errors import UserError
from ssl_bench.protocol import HASHED_WHEN_SET, shipped, shipped_versions
from ssl_bench.protocol import load as load_protocol
from ssl_bench.results import Result, check, crashing

log = logging.getLogger("ssl_bench.results.claims")

MIN_SEEDS = 2  #: seeds a group needs (shared with the group it is compared with) to take part
STREAMS = ("instance", "class", "distant", "domain")
SUPERVISED = "supervised"  #: the supervised reference; every other method counts as self-supervised
CONTRASTIVE, NON_CONTRASTIVE = "contrastive", "non-contrastive"
#: The one table that names methods: each shipped method's family, as the claims' papers group them.
#: Contrastive methods pull two views together and push other images' views away (negatives: in-batch,
#: a queue, or nearest neighbours); non-contrastive ones have no negatives (a predictor and a stop-gradient or
#: EMA target, a redundancy or variance penalty, a self-distillation target, or balanced cluster assignments, as
#: Garrido et al. 2023 and Li, Efros & Pathak 2022 group them); MAE reconstructs pixels ("masked", neither);
#: "supervised" is the labelled reference. A method missing here (an outside plugin) is "unlisted": it takes
#: part in the claims about every SSL method (2-4, 6), not in those that need a family (1, 7).
FAMILIES: dict[str, str] = {
    "simclr": CONTRASTIVE,
    "moco": CONTRASTIVE,
    "mocov3": CONTRASTIVE,
    "nnclr": CONTRASTIVE,
    "byol": NON_CONTRASTIVE,
    "simsiam": NON_CONTRASTIVE,
    "vicreg": NON_CONTRASTIVE,
    "barlow": NON_CONTRASTIVE,
    "dino": NON_CONTRASTIVE,
    "swav": NON_CONTRASTIVE,
    "mae": "masked",
    SUPERVISED: "supervised",
}

#: the precondition: a method learned if its final accuracy is at least 2 points above its random init's (with the
#: interval above 0); below that, the backbone barely left its initialisation and comparisons measure noise
MIN_GAIN = 0.02
CONFIDENCE = 0.95  #: of every interval
MAX_SEEDS = 1000  #: an inconclusive check needing more seeds than this says "more than 1000"

#: arrays kept in memory (besides every ``end/...`` array)
KEEP = ("metrics/acc_matrix", "metrics/acc_init", "metrics/collapse/auc", "phases/experiences", "recipe")
REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE = "reproduced", "contradicted", "inconclusive", "not testable"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE)


def family(method: str) -> str:
    """The method's family (:data:`FAMILIES`), "unlisted" for a method not in the table."""
    return FAMILIES.get(method, "unlisted")


@dataclass
class RunFile:
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
    runs: list[RunFile] = field(default_factory=list)  #: the runs the numbers come from (compute)
    missing: list[str] = field(default_factory=list)  #: what a test needs and is not there
    to_run: int = 0  #: runs that would make it testable (0: not counted)
    why: list[str] = field(default_factory=list)  #: failed preconditions (a method that does not learn, ...)
    checks: list[Check] = field(default_factory=list)  #: the items judged (their verdicts make the finding's)

    def judge(self) -> None:
        """The finding's verdict from its checks (:func:`combine`), and their lines under its tables."""
        self.verdict = combine(c.verdict for c in self.checks)
        if self.checks:
            self.lines += ["", *(c.line() for c in self.checks)]
        if self.verdict != NOT_TESTABLE:
            self.missing, self.to_run = [], 0


def collect(folder: str | Path) -> list[RunFile]:
    """Every good result file under ``folder`` (recursively, sorted), read as the leaderboard reads them.

    A file that crashes or hangs the HDF5 library (:func:`ssl_bench.results.crashing`), that fails
    :func:`ssl_bench.results.check` (damaged, edited, relabelled: its numbers are never used), or a second file of a
    run already found is skipped with one warning line naming it and why; so is a recipe or option variant (the
    claims are judged on the methods' default recipes)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"results folder '{folder}' does not exist")
    paths = sorted(folder.rglob("*.h5"))
    if not paths:
        raise UserError(f"no result files (*.h5) under '{folder}'")
    crashed = crashing(paths)
    runs = []
    first: dict[tuple, Path] = {}
    for p in paths:
        try:
            if p in crashed:
                raise UserError(crashed[p])
            r = Result(p)
            numbers = check(r)  # whole, unedited, consistent; the summary recomputed from the arrays
            proto = json.loads(r["protocol_json"])
            run = tuple(r.attrs[k] for k in ("protocol_hash", "method", "stream", "strategy", "seed"))
            if run in first and not r.attrs.get("variant"):
                raise UserError(f"'{p}' is the same run (protocol, method, stream, strategy, seed) as '{first[run]}'; keep one")
        except UserError as err:
            log.warning("skipped a bad result file: %s", err)
            continue
        if r.attrs.get("variant"):  # the claims are checked on the methods' default recipes
            log.warning("skipped %s: a recipe or option variant (run identity %s)", p, r.attrs.get("run_identity"))
            continue
        first[run] = p
        arrays = {k: v for k, v in r.arrays.items() if k in KEEP or k.startswith("end/")}
        for k in ("metrics/cka/features", "metrics/cka/index"):  # the last phase only: what CKA to joint compares
            if k in r.arrays:
                arrays[k] = np.asarray(r.arrays[k])[-1:]
        runs.append(RunFile(p, p.relative_to(folder).as_posix(), r.attrs, arrays, numbers, proto))
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

    def __init__(self, runs: list[RunFile]):
        self.runs = runs
        self.groups: dict[tuple[str, str, str, str], list[RunFile]] = defaultdict(list)
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
        #: the files' protocols and the shipped ones (current and kept versions), so a missing domain twin can be named
        shipped_ones = map(load_protocol, shipped() + shipped_versions())
        self.known = {p.label: p.model_dump(mode="json") for p in shipped_ones} | self.protocols
        #: scope -> the scope its domain stream runs under: the protocol named by its ``domain_protocol`` key
        #: (natural domains, protocol v2 and later), else its transform-domain twin (:func:`domain_twins`, v1)
        self.twins = domain_twins(self.known) | domain_protocols(self.known)

    def source(self, scope: str, stream: str) -> str:
        """The scope whose runs stand for ``scope``'s ``stream``: its own, or for a domain stream it has no
        runs of, the protocol its domain stream runs under (:attr:`twins`)."""
        if stream == "domain" and scope in self.twins and not any(k[0] == scope and k[2] == stream for k in self.groups):
            return self.twins[scope]
        return scope

    def get(self, scope: str, method: str, stream: str, strategy: str) -> list[RunFile]:
        return self.groups.get((scope, method, stream, strategy), [])

    def methods(self, scope: str, ssl_only: bool = False) -> list[str]:
        found = sorted({k[1] for k in self.groups if k[0] == scope})
        return [m for m in found if m != SUPERVISED] if ssl_only else found

    def streams(self, scope: str) -> list[str]:
        found = {k[2] for k in self.groups if k[0] == scope}
        return [s for s in STREAMS if s in found] + sorted(found - set(STREAMS))

    def paired(self, scope: str, method: str, stream: str, *strategies: str) -> dict[str, list[RunFile]] | None:
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
        q = canonical(p)
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


def canonical(p: dict[str, Any]) -> dict[str, Any]:
    """A copy of a protocol's JSON without the keys added later (:data:`ssl_bench.protocol.HASHED_WHEN_SET`) where
    they hold their default, so a file written before they existed compares equal to one written after."""
    q = json.loads(json.dumps(p))
    for path, default in HASHED_WHEN_SET.items():
        *parents, last = path
        table = q
        for key in parents:
            table = table.get(key, {}) if isinstance(table, dict) else {}
        if isinstance(table, dict) and table.get(last, default) == default:
            table.pop(last, None)
    return q


def domain_protocols(protocols: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Per protocol scope that names a ``domain_protocol`` (e.g. tinyimagenet-cpu v2: ``pacs-cpu``), the scope of
    that protocol among ``protocols``: the label itself, or the highest version of that name."""
    out = {}
    for scope, p in sorted(protocols.items()):
        name = p.get("domain_protocol")
        if not name:
            continue
        if name in protocols:
            out[scope] = name
            continue
        versions = [(q.get("version", 0), s) for s, q in protocols.items() if q.get("name") == name]
        if versions:
            out[scope] = max(versions)[1]
    return out


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


def acc(runs: list[RunFile]) -> list[float]:
    return [r.numbers["final_avg_acc"] for r in runs]


def auc(runs: list[RunFile]) -> list[float] | None:
    values = [r.numbers.get("collapse_auc") for r in runs]
    return None if any(v is None for v in values) else [float(v) for v in values if v is not None]


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(x: ArrayLike) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    _, inverse, counts = np.unique(np.asarray(x, dtype=float), return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def pm_end(runs: list[RunFile], key: str, digits: int) -> str:
    values = [r.end(key) for r in runs]
    return "—" if not values or any(v is None for v in values) else pm(values, 1, digits)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def gaps_to_joint(ix: Index, scope: str, method: str) -> dict[str, dict[str, list[RunFile]]]:
    """Per stream, the sequential and joint runs of ``method`` on their common seeds (streams with enough seeds),
    the domain stream's from the domain twin where ``scope`` has none (:meth:`Index.source`)."""
    out = {}
    for stream in STREAMS:
        pair = ix.paired(ix.source(scope, stream), method, stream, "sequential", "joint")
        if pair:
            out[stream] = pair
    return out


def gap_values(pair: dict[str, list[RunFile]]) -> list[float]:
    return [j - s for s, j in zip(acc(pair["sequential"]), acc(pair["joint"]))]


def mark(ok: bool) -> str:
    return "yes" if ok else "no"


# ---------------------------------------------------------------- intervals and verdicts


def _t_coverage(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with ``df`` degrees of freedom (exact, Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2:
        if df == 1:
            return 2 * theta / math.pi
        term = total = c
        for k in range(3, df - 1, 2):
            term *= c * c * (k - 1) / k
            total += term
        return 2 / math.pi * (theta + s * total)
    term = total = 1.0
    for k in range(2, df - 1, 2):
        term *= c * c * (k - 1) / k
        total += term
    return s * total


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t critical value: P(|T| < t) = ``confidence`` (bisection on the exact coverage)."""
    lo, hi = 0.0, 1e7
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_coverage(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Interval:
    """A 95% interval around an estimate: a t-interval over ``n`` seeds (``sd`` their spread), or a bootstrap
    interval over ``n`` runs (``kind`` "bootstrap", ``sd`` None)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float | None = None
    kind: str = "t"

    def text(self, scale: float = 100.0, digits: int = 2) -> str:
        return f"{self.mean * scale:+.{digits}f} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]"

    def seeds_needed(self, threshold: float) -> int | None:
        """How many seeds (runs, for a bootstrap) would put the interval on one side of ``threshold`` if the
        estimate and the spread stayed as observed; None when no number would (the estimate is the threshold)."""
        distance = abs(self.mean - threshold)
        if distance == 0:
            return None
        if self.kind != "t" or self.sd is None:  # half-width shrinks as 1/sqrt(n)
            half = max(self.high - self.mean, self.mean - self.low)
            return max(self.n + 1, math.ceil(self.n * (half / distance) ** 2))
        for n in range(max(2, self.n + 1), MAX_SEEDS + 1):
            if t_quantile(n - 1) * self.sd / math.sqrt(n) < distance:
                return n
        return MAX_SEEDS + 1


def t_interval(values: Iterable[Any]) -> Interval | None:
    """Student's t-interval of the mean of ``values`` (one per seed); None for fewer than 2 values."""
    v = np.asarray(list(values), dtype=float)
    if len(v) < 2:
        return None
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    half = t_quantile(len(v) - 1) * sd / math.sqrt(len(v))
    return Interval(mean, mean - half, mean + half, len(v), sd)


def paired(a: Sequence[float], b: Sequence[float]) -> Interval | None:
    """The t-interval of ``b - a`` taken seed by seed (``a`` and ``b`` list the same seeds in the same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same seeds on both sides ({len(a)} and {len(b)})")
    return t_interval(y - x for x, y in zip(a, b))


def verdict(interval: Interval | None, threshold: float, above: bool) -> str:
    """``above``: the claim says the quantity exceeds ``threshold`` (else: that it stays below it)."""
    if interval is None:
        return NOT_TESTABLE
    if interval.low > threshold:
        return REPRODUCED if above else CONTRADICTED
    if interval.high < threshold:
        return CONTRADICTED if above else REPRODUCED
    return INCONCLUSIVE


def combine(verdicts: Iterable[str]) -> str:
    """A claim's verdict over its items: contradicted if any item is, reproduced only if every testable item is
    (and there is one), not testable when none is testable, otherwise inconclusive. Items that are not
    testable (a method that does not learn) leave the others' verdict alone; a claim that needs them says so
    itself (e.g. claim 1 needs a method of each family)."""
    testable = [v for v in verdicts if v != NOT_TESTABLE]
    if not testable:
        return NOT_TESTABLE
    if CONTRADICTED in testable:
        return CONTRADICTED
    return REPRODUCED if all(v == REPRODUCED for v in testable) else INCONCLUSIVE


@dataclass
class Check:
    """One item of a claim: ``what`` (a quantity, in the rule's words) against ``threshold``."""

    what: str
    interval: Interval | None
    threshold: float
    above: bool  #: the claimed side: above the threshold (else below)
    scale: float = 100.0  #: display scale (100: fractions shown as points)
    digits: int = 2
    unit: str = "points"
    why: str = ""  #: the reason it is not testable (a precondition), when it is not

    @property
    def verdict(self) -> str:
        return NOT_TESTABLE if self.why else verdict(self.interval, self.threshold, self.above)

    def line(self) -> str:
        side = ">" if self.above else "<"
        wanted = f"{side} {self.threshold * self.scale:.{self.digits}f}"
        if self.why or self.interval is None:
            return f"- {self.what}: **{NOT_TESTABLE}** ({self.why or 'fewer than 2 seeds'})"
        iv = self.interval
        n = f"n = {iv.n} {'seeds' if iv.kind == 't' else 'runs, cluster bootstrap'}"
        unit = f" {self.unit}" if self.unit else ""
        text = f"- {self.what}: {iv.text(self.scale, self.digits)}{unit} ({n}); claimed {wanted}: **{self.verdict}**"
        if self.verdict == INCONCLUSIVE:
            need = iv.seeds_needed(self.threshold)
            count = "seeds" if iv.kind == "t" else "runs"
            if need is None:
                text += f" (the estimate is on the threshold: no number of {count} would decide)"
            elif need > MAX_SEEDS:
                text += f" (more than {MAX_SEEDS} {count} would be needed at this spread)"
            else:
                text += f" (about {need} {count} would decide at this spread)"
        return text


def learning(runs: Iterable[RunFile]) -> Interval | None:
    """The gain of final held-out accuracy over the same run's random init, per seed (the mean over the given
    runs of that seed), as a t-interval over seeds; None without ``init_avg_acc`` or under 2 seeds."""
    per_seed: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        if "init_avg_acc" not in r.numbers:
            return None
        per_seed[r.seed].append(r.numbers["final_avg_acc"] - r.numbers["init_avg_acc"])
    return t_interval(float(np.mean(v)) for _, v in sorted(per_seed.items()))


def learned(interval: Interval | None) -> bool:
    """The precondition: a gain of at least :data:`MIN_GAIN` with its interval above 0."""
    return interval is not None and interval.mean >= MIN_GAIN and interval.low > 0


def not_learning(method: str, where: str, interval: Interval | None) -> str:
    """Why a method is left out, e.g. "byol does not learn on the instance stream at this budget (+0.55 [...])"."""
    if interval is None:
        return f"{method}'s learning on {where} cannot be judged (no random-init accuracy or fewer than 2 seeds)"
    return (
        f"{method} does not learn on {where} at this budget (gain over random init {interval.text()} points; "
        f"needed: at least {MIN_GAIN * 100:.0f} with the interval above 0)"
    )


def gate(method: str, where: str, runs: Iterable[RunFile]) -> str:
    """ "" when ``method`` learned in ``runs`` (:func:`learned`), else the reason it takes no part."""
    interval = learning(runs)
    return "" if learned(interval) else not_learning(method, where, interval)


Measure = tuple[str, Callable[["RunFile"], float]]


def measures(runs: Iterable[RunFile]) -> list[Measure]:
    """What a comparison of accuracies is made on: the final held-out probe accuracy (``final_avg_acc``), and each
    downstream accuracy the runs all store (protocol v2: transfer to data the backbone was not pre-trained on, as
    Hu et al. judge pre-training): a dataset's linear probe ``end/downstream/<label>/acc`` and its few-shot
    accuracy over all domains ``end/downstream/<label>/acc_<k>shot`` (the per-domain few-shot numbers are parts of
    that mean, not judged on their own: one verdict per task type, not per domain)."""
    runs = list(runs)
    out: list[Measure] = [("held-out probe", _held_out)]
    keys = set.intersection(*({k for k in r.arrays if k.startswith("end/downstream/")} for r in runs)) if runs else set()
    for key in sorted(k for k in keys if re.fullmatch(r"acc(_\d+shot)?", k.rsplit("/", 1)[-1])):
        out.append((f"downstream {key[len('end/downstream/') :]}", _downstream(key)))
    return out


def _held_out(r: RunFile) -> float:
    return r.numbers["final_avg_acc"]


def _downstream(key: str) -> Callable[[RunFile], float]:
    def value(r: RunFile) -> float:
        return float(np.mean(r.arrays[key]))

    return value


def within_rank_correlation(points: Sequence[tuple[str, str, float, float]]) -> float:
    """The rank correlation of x and y *within* groups: ranks are taken inside each group (a method), centred on
    the group's mean rank and pooled, then correlated (Pearson on the centred ranks). That is Spearman's rho with
    the group partialled out: a difference between groups (one method learns, another does not) cannot make it.
    ``points``: (group, cluster, x, y); NaN when nothing varies within a group."""
    return _within(_by_group(points).values())


def _by_group(points: Sequence[tuple[str, str, float, float]]) -> dict[str, dict[str, np.ndarray]]:
    """group -> cluster -> its points as an (n, 2) array, both sorted."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for g, c, x, y in points:
        out[g][c].append((x, y))
    return {g: {c: np.asarray(out[g][c], dtype=float) for c in sorted(out[g])} for g in sorted(out)}


def _within(groups: Iterable[dict[str, np.ndarray]] | Iterable[np.ndarray]) -> float:
    xs, ys = [], []
    for g in groups:
        v = np.concatenate(list(g.values())) if isinstance(g, dict) else g
        if len(v) < 2:
            continue
        rx, ry = _ranks(v[:, 0]), _ranks(v[:, 1])
        xs.append(rx - rx.mean())
        ys.append(ry - ry.mean())
    if not xs:
        return float("nan")
    x, y = np.concatenate(xs), np.concatenate(ys)
    if not x.any() or not y.any():
        return float("nan")
    return float((x @ y) / math.sqrt((x @ x) * (y @ y)))


BOOTSTRAP = 2000  #: resamples of the cluster bootstrap (fixed generator seed 0, so the report is deterministic)


def within_rank_correlation_interval(points: Sequence[tuple[str, str, float, float]]) -> Interval | None:
    """:func:`within_rank_correlation` with a 95% percentile interval from a cluster bootstrap: the clusters (runs:
    the phases of one run are not independent) are resampled with replacement within each group, :data:`BOOTSTRAP`
    times, and the statistic recomputed on each resample (resamples where nothing varies are dropped). None with
    fewer than 2 clusters in every group or a NaN estimate.

    All resamples at once: a resample is a multiplicity per point, and a point's average rank among the resampled
    points is (resampled points below it) + (resampled points equal to it + 1) / 2."""
    grouped = _by_group(points)
    estimate = _within(grouped.values())
    usable = [list(c.values()) for c in grouped.values() if len(c) >= 2]
    if not usable or not np.isfinite(estimate):
        return None
    rng = np.random.default_rng(0)
    num, dx, dy = (np.zeros(BOOTSTRAP) for _ in range(3))
    for clusters in usable:
        v = np.concatenate(clusters)
        owner = np.repeat(np.arange(len(clusters)), [len(c) for c in clusters])
        draws = rng.integers(0, len(clusters), (BOOTSTRAP, len(clusters)))
        per_cluster = np.zeros((BOOTSTRAP, len(clusters)))
        np.add.at(per_cluster, (np.arange(BOOTSTRAP)[:, None], draws), 1.0)
        m = per_cluster[:, owner]  # (resamples, points): how often each point is drawn
        half = (m.sum(axis=1, keepdims=True) + 1) / 2  # the mean rank
        centred = []
        for col in (v[:, 0], v[:, 1]):
            below = (col[None, :] < col[:, None]).astype(float)  # [p, q]: point q lies below point p
            equal = (col[None, :] == col[:, None]).astype(float)
            centred.append(m @ below.T + (m @ equal.T + 1) / 2 - half)
        num += (m * centred[0] * centred[1]).sum(axis=1)
        dx += (m * centred[0] ** 2).sum(axis=1)
        dy += (m * centred[1] ** 2).sum(axis=1)
    ok = (dx > 0) & (dy > 0)
    if not ok.any():
        return None
    values = num[ok] / np.sqrt(dx[ok] * dy[ok])
    low, high = np.percentile(values, [2.5, 97.5])
    return Interval(estimate, float(low), float(high), sum(len(cs) for cs in usable), None, "bootstrap")


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

    def save(self, fig: Any, name: str, alt: str) -> str:
        """Write ``fig`` as ``name`` (no software or date metadata) and return its markdown image link."""
        import matplotlib.pyplot as plt

        path = self.folder / name
        fig.savefig(path, dpi=100, metadata={"Software": None})
        plt.close(fig)
        return f"![{alt}]({Path(os.path.relpath(path, self.link_base)).as_posix()})"

    @staticmethod
    def name(kind: str, scope: str) -> str:
        return f"{kind}__{''.join(c if c.isalnum() or c in '-_.' else '_' for c in scope)}.png"
