"""What every claim shares: the result files read once (:class:`RunFile`, :func:`collect`), grouped
(:class:`Index`), the statistics and table helpers, a :class:`Finding` per claim and protocol, and the
:class:`Figures` folder."""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ssl_bench.errors import UserError
from ssl_bench.protocol import load as load_protocol
from ssl_bench.protocol import shipped
from ssl_bench.results import Result, continual

log = logging.getLogger("ssl_bench.results.claims")

MIN_SEEDS = 2  #: seeds a group needs (shared with the group it is compared with) to take part
STREAMS = ("instance", "class", "distant", "domain")
CONTRASTIVE = ("simclr", "moco")
NON_CONTRASTIVE = ("byol", "simsiam")
SUPERVISED = "supervised"  #: every other method counts as self-supervised

KEEP = ("metrics/acc_matrix", "metrics/acc_init", "metrics/collapse/auc", "phases/experiences")  #: arrays kept in memory
REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable"


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


def collect(folder: str | Path) -> list[RunFile]:
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
        #: the files' protocols and the shipped ones, so a missing domain twin can be named
        self.known = {p.label: p.model_dump(mode="json") for p in map(load_protocol, shipped())} | self.protocols
        self.twins = domain_twins(self.known)  #: scope -> its domain twin's scope

    def source(self, scope: str, stream: str) -> str:
        """The scope whose runs stand for ``scope``'s ``stream``: its own, or for a domain stream it has no
        runs of, its domain twin's."""
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


def learned(runs: list[RunFile]) -> str:
    """``mean ± std`` of final accuracy minus the same run's random-init accuracy, in points ("-" without init)."""
    if any("init_avg_acc" not in r.numbers for r in runs):
        return "-"
    return pm([r.numbers["final_avg_acc"] - r.numbers["init_avg_acc"] for r in runs])


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


def verdict_of(checks: list[bool]) -> str:
    return REPRODUCED if all(checks) else NOT_REPRODUCED


def mark(ok: bool) -> str:
    return "yes" if ok else "no"


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
