"""``ssl-bench report``: the founding papers' claims checked against result files alone.

Seven claims (Hu et al. ICLR 2022 on streaming SSL; S3L, "Small is beautiful"; Li, Efros and
Pathak on collapse), one module each (``claim_*.py``: ``SECTION``, ``CLAIMS``, ``RULES``, ``SCOPES`` and
``judge``), each with its verdict rule and thresholds fixed in its module and printed in the report next
to the numbers, so the wording never depends on the outcome. Every comparison is paired by seed and has a
95% interval (:mod:`.base`: t-intervals over seeds; a cluster bootstrap for claim 4a's correlation). A
verdict is one of ``reproduced`` (the interval lies wholly on the claimed side of the rule's threshold),
``contradicted`` (wholly on the other side), ``inconclusive`` (it straddles the threshold; the report says
how many seeds would decide at the observed spread) or ``not testable`` (a precondition fails, e.g. a
method that does not learn at this budget, or runs are missing: the report names them and estimates the
compute they need from the runs already there).

Runs are grouped by protocol (name, version and hash), method, stream and strategy; seeds
are pooled. Only default-recipe runs count: a file that changed the method's recipe or options
(``variant``, see :mod:`ssl_bench.recipe`) is skipped with a warning. Every number is
recomputed from the stored arrays (:func:`ssl_bench.results.continual.summarize`,
:func:`ssl_bench.results.continual.cka_to_joint`); stored summary attributes are never read.
Numbers are mean ± standard deviation over seeds (ddof = 1); comparisons between two groups
use the seeds both have, and a group takes part only with at least :data:`MIN_SEEDS` of them.
Each claim is judged per protocol (claim 5 per pair of protocols). Data without domains has no domain
stream, so claims 1 and 2 take a protocol's domain-stream runs from the protocol it names as
``domain_protocol`` (v2: natural domains, PACS), or else from its *domain twin*: the same protocol with the
dataset option ``transform_domains`` (:func:`domain_twins`, v1), as Hu et al. measure the domain gap on other
data (DomainNet) than the other streams' (ImageNet).

The output is deterministic: files are read in sorted order, floats have fixed formats,
there are no timestamps or absolute paths, and figures (PNG, matplotlib Agg) carry no
software or date metadata, so the same files give the same bytes.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import numpy as np

from ssl_bench.errors import UserError
from ssl_bench.results.claims.base import (
    CONFIDENCE,
    MIN_GAIN,
    MIN_SEEDS,
    NOT_TESTABLE,
    Figures,
    Finding,
    Index,
    RunFile,
    collect,
    learned,
    learning,
    pm,
    table,
)
from ssl_bench.results.tables import md_text


def claim_modules() -> list[ModuleType]:
    """The claims, one module each (``claim_*.py`` in this package), in the order of their sections."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("claim_"))
    modules = [importlib.import_module(f"{__name__}.{n}") for n in names]
    return sorted(modules, key=lambda m: m.SECTION[0])


def claim_texts() -> tuple[dict[str, str], dict[str, str]]:
    """Every claim's text and verdict rule, by claim id."""
    texts, rules = {}, {}
    for m in claim_modules():
        texts.update(m.CLAIMS)
        rules.update(m.RULES)
    return texts, rules


def findings(runs: list[RunFile], figures: Figures | None = None) -> list[Finding]:
    """Every claim judged on ``runs``: per protocol scope (a domain twin's claims 1 and 2 are its base's), or once."""
    ix = Index(runs)
    out: list[Finding] = []
    twinned = {t for b, t in ix.twins.items() if b in ix.scopes}  # judged with the protocol they serve
    scopes: dict[str, list[str | None]] = {"own": [s for s in ix.scopes if s not in twinned], "each": [*ix.scopes]}
    scopes["pairs"] = [None]
    for module in claim_modules():
        for scope in scopes[module.SCOPES]:
            out += module.judge(ix, scope, figures)
    order = [c for m in claim_modules() for c in m.CLAIMS]
    return sorted(out, key=lambda f: order.index(f.claim))  # stable: scopes stay sorted within a claim


def _compute(runs: list[RunFile]) -> str:
    if not runs:
        return "no runs"
    unique = {r.rel: r for r in runs}.values()
    devices = sorted({md_text(r.device) for r in unique})  # text from the files: escaped for markdown
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
    devices = ", ".join(sorted({md_text(r.device) for r in ix.runs if r.scope == scope}))
    return (
        f" To test it: about {f.to_run} more runs, about {f.to_run * per:.0f} min at this protocol's median "
        f"{per:.1f} min per run ({devices})."
    )


def learning_table(ix: Index) -> list[str]:
    """Every configuration's gain over its random init, the precondition of every claim, with its training steps:
    protocols that differ only in the budget (tinyimagenet-cpu-steps2/-4/-6) or the width make it a budget curve."""
    rows = []
    for (scope, method, stream, strategy), group in sorted(ix.groups.items()):
        if any("init_avg_acc" not in r.numbers for r in group):
            continue
        gains = [r.numbers["final_avg_acc"] - r.numbers["init_avg_acc"] for r in group]
        interval = learning(group)
        steps = sorted({int(r.attrs.get("steps", 0)) for r in group})
        rows.append(
            [
                *map(md_text, (scope, method, stream, strategy)),
                ", ".join(map(str, steps)),
                str(len(group)),
                pm([r.numbers["final_avg_acc"] for r in group]),
                interval.text() if interval else f"{float(np.mean(gains)) * 100:+.2f}",
                "yes" if learned(interval) else ("no" if interval else "-"),
            ]
        )
    header = ["protocol", "method", "stream", "strategy", "steps", "seeds", "final acc %", "gain over init", "learned"]
    return table(header, rows)


def render(runs: list[RunFile], figures: Figures | None = None) -> str:
    """The findings report as markdown (deterministic for the same files)."""
    ix = Index(runs)
    found = findings(runs, figures)
    out = [
        "# Findings: what ssl-bench reproduces",
        "",
        f"Generated by `ssl-bench report` from {len(runs)} result files under {len(ix.scopes)} protocol(s); the same "
        "files give the same report. Every number is recomputed from the stored arrays "
        "(`ssl_bench.results.continual`), never taken from stored summaries. Numbers are mean ± standard deviation over "
        f"seeds (ddof = 1); accuracies are the final linear-probe accuracy averaged over experiences, in %. A "
        f"comparison uses the seeds both sides have, at least {MIN_SEEDS}, and a difference is taken seed by seed; "
        f"brackets give its mean and {CONFIDENCE:.0%} interval, Student's t over the seeds (mean ± t · sd / √n; "
        "claim 4a's correlation: a cluster bootstrap over runs). A verdict is **reproduced** when the interval lies "
        "wholly on the claimed side of the rule's threshold, **contradicted** when it lies wholly on the other side, "
        "**inconclusive** when it straddles the threshold (with the seeds that would decide at the observed spread), "
        "and **not testable** when a precondition fails or runs are missing. Precondition: a method takes part only "
        f"where it learned, its final accuracy at least {MIN_GAIN * 100:.0f} points above its random init's with the "
        "interval above 0. A claim over several items is contradicted if any item is, reproduced if every item is, "
        "otherwise inconclusive. Each claim's rule and thresholds are fixed in its module in "
        "`ssl_bench/results/claims/` and printed below; a claim is judged per protocol.",
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
    out += [
        "",
        "## Does each method learn?",
        "",
        "The precondition of every claim, per configuration: the final accuracy minus the same run's random init's, "
        f"in points, with its {CONFIDENCE:.0%} t-interval over seeds (one seed: the gain alone); *learned*: at least "
        f"{MIN_GAIN * 100:.0f} points with the interval above 0. Steps are each run's training steps, so protocols "
        "that differ only in their budget or width show how a method's gain grows with them.",
        "",
    ]
    out += learning_table(ix)
    texts, rules = claim_texts()
    for number, title, claims in ((m.SECTION[0], m.SECTION[1], tuple(m.CLAIMS)) for m in claim_modules()):
        out += ["", f"## {number}. {title}"]
        for claim in claims:
            out += ["", f"**Claim {claim}.** {texts[claim]}", "", f"**Rule.** {rules[claim]}"]
            for f in (f for f in found if f.claim == claim):
                out += ["", f"### {claim} — {f.scope}: {f.verdict}", ""]
                out += f.lines + ([""] if f.lines else [])
                out.append(f"Compute: {_compute(f.runs)}.")
                if f.why:
                    lead = "Not testable" if f.verdict == NOT_TESTABLE else "Left out"
                    out += ["", f"{lead}: " + "; ".join(f.why) + "."]
                if f.verdict == NOT_TESTABLE and f.missing:
                    out += ["", "Missing: " + "; ".join(f.missing) + "." + _budget(ix, f)]
    out += ["", "## Runs", ""]
    out += table(
        ["protocol", "method", "stream", "strategy", "seeds", "device", "minutes"],
        [
            [
                *map(md_text, key),
                ", ".join(str(r.seed) for r in group),
                ", ".join(sorted({md_text(r.device) for r in group})),
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
