"""``ssl-bench check --plugin X``: a contributor's pre-flight before opening a pull request.

It checks, one row each: the plugin loads and its hooks have valid names and signatures
(the registry's own validation, :meth:`ssl_bench.registry.Registry.load`); it provides
something, under names no other installed plugin uses; its metadata is complete (name,
``__version__``, ``__paper__``, ``__license__``, a module docstring); and every thing it
provides trains and evaluates end to end under a protocol (``smoke`` by default):

- a method, stream or strategy runs in place of the protocol's default one;
- a backbone, dataset or evaluator runs in a copy of the protocol that names it (its hash
  then differs from the shipped protocol's: this checks that it works, nothing more).

A method is trained under every seed of the protocol (``--seeds`` picks fewer), and the check says whether it
learns: its gain over the random-init backbone (final probe accuracy minus the same run's init accuracy, paired
by seed, 95% t-interval over seeds), beside SimCLR's under the same protocol, stream and strategy (from the
result files in ``--reference``, the leaderboard by default), and a verdict by the report's rule
(:func:`ssl_bench.results.claims.base.learned`: a gain of at least 2 points with its interval above 0). Its runs
are written where ``sweep`` writes them (``--out``, which keeps them: a later sweep skips them; a configuration
already finished there is not trained again).

The result is a ✓/✗ table on stdout and a markdown block (stdout and a file) to paste into
the pull request. :func:`run_checks` never raises for a problem of the plugin: every
problem becomes a ✗ row with one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import logging
import platform
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import ssl_bench
from ssl_bench import protocol as protocols
from ssl_bench.errors import UserError
from ssl_bench.registry import KINDS, PluginInfo, Registry, plugin_of_exception

HELP = "a contributor's pre-flight: load, validate and run every thing a plugin provides"

log = logging.getLogger(__name__)

OK, FAIL, SKIP = "✓", "✗", "–"
#: names users type on the command line: lowercase letters, digits, '-', '_' and '.'
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass
class Row:
    check: str
    ok: bool | None  #: None = not checked (an earlier check failed)
    detail: str = ""

    @property
    def mark(self) -> str:
        return SKIP if self.ok is None else OK if self.ok else FAIL


@dataclass
class Report:
    spec: str
    protocol: str
    rows: list[Row] = field(default_factory=list)
    plugin: PluginInfo | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = ""  #: whether the method learns (the learning row's verdict), "" when no method ran

    @property
    def passed(self) -> bool:
        return all(r.ok is not False for r in self.rows) and any(r.ok for r in self.rows)

    def add(self, check: str, ok: bool | None, detail: str = "") -> bool:
        self.rows.append(Row(check, ok, detail))
        log.log(
            logging.INFO if ok is not False else logging.WARNING,
            "%s %s%s",
            Row(check, ok).mark,
            check,
            f": {detail}" if detail else "",
        )
        return bool(ok)

    def text(self) -> str:
        width = max(len(r.check) for r in self.rows)
        return "\n".join(f"{r.mark} {r.check:<{width}}  {r.detail}".rstrip() for r in self.rows)

    def markdown(self) -> str:
        import torch

        p = self.plugin
        name = p.name if p else self.spec
        version = p.version if p else "?"
        verdict = "all checks passed" if self.passed else "SOME CHECKS FAILED"
        lines = [f"### `ssl-bench check`: plugin `{name}` {version}: {verdict}", "", "| | check | detail |", "|:-:|---|---|"]
        lines += [f"| {r.mark} | {r.check} | {_md(r.detail)} |" for r in self.rows]
        if self.verdict:
            lines += ["", f"**Does it learn?** {_md(self.verdict)}"]
        lines += [
            "",
            f"ssl-bench {ssl_bench.__version__} · torch {torch.__version__} · python {platform.python_version()} · "
            f"{platform.system()} {platform.machine()} · protocol {self.protocol}",
            "",
        ]
        return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def run_checks(
    spec: str,
    protocol: str = "smoke",
    out: Path | None = None,
    data_root: str | None = None,
    download: bool = False,
    device: str = "auto",
    progress: bool = False,
    seeds: str = "all",
    reference: Path | None = Path("leaderboard") / "results",
) -> Report:
    """Check the plugin ``spec`` (entry-point name, module or .py file) and return the report. A method runs under
    ``seeds`` ("all": the protocol's; or "0,1"), the rest under the first; ``reference``: the folder of result files
    that holds SimCLR's runs to compare the method's learning with."""
    from ssl_bench.engine.launch import seeds_from

    proto = protocols.load(protocol)  # a bad --protocol is the user's error, not the plugin's
    method_seeds = seeds_from(seeds, proto)
    if not method_seeds:
        raise UserError("--seeds names no seed")
    report = Report(spec, f"{proto.label} (`{proto.hash[:12]}`)")
    registry, info = _load(spec, report)
    if info is None:
        return report
    report.plugin = info
    provided = [(kind, name) for kind in KINDS for name in info.provides.get(kind, [])]
    hooks = [impl.name for impl in registry.pm.get_hookcallers(info.module) or []]
    observer_only = not provided and any(h not in KINDS.values() for h in hooks)  # e.g. a logger: nothing to run
    report.add(
        "provides something",
        bool(provided) or observer_only,
        ", ".join(f"{kind} {name}" for kind, name in provided)
        or ("observer hooks only, nothing to run" if observer_only else "no factory hook returned anything"),
    )
    bad = [name for _, name in provided if not NAME.match(name)]
    if provided:
        report.add("names are lowercase (a-z 0-9 - _ .)", not bad, f"rename {', '.join(bad)}" if bad else "")
    _check_clashes(spec, info, provided, report)
    _check_metadata(info, report)
    with tempfile.TemporaryDirectory(prefix="ssl-bench-check-") as tmp:
        folder = Path(out) if out else Path(tmp)
        for kind, name in provided:
            _check_run(
                registry,
                info,
                kind,
                name,
                proto,
                folder,
                report,
                dict(data_root=data_root, download=download, device=device, progress=progress),
                method_seeds if kind == "method" else method_seeds[:1],
                reference,
            )
    return report


def _load(spec: str, report: Report) -> tuple[Registry | None, PluginInfo | None]:
    registry = Registry()
    registry.load_builtins()
    registry.load_entry_points()
    known = set(registry.plugins)
    try:
        info = registry.load(spec)
    except UserError as err:
        # the registry keeps what it found: a module that imported but whose hooks were refused
        found = [p for n, p in registry.plugins.items() if p.error and (n not in known or n == spec)]
        imported = found and found[0].module is not None
        report.add("loads", bool(imported), "imports" if imported else str(err))
        report.add("hooks have valid names and signatures", False if imported else None, found[0].error if imported else "")
        return None, None
    registry.requested = [info]
    report.add("loads", True, info.source)
    hooks = sorted(impl.name for impl in registry.pm.get_hookcallers(info.module) or [])
    report.add("hooks have valid names and signatures", True, ", ".join(hooks) or "no hooks")
    return registry, info


def _check_clashes(spec: str, info: PluginInfo, provided, report: Report) -> None:
    """A name another installed plugin also provides would mix two things in the leaderboard."""
    others = Registry()
    others.load_builtins()
    others.load_entry_points()
    clashes = [
        f"{kind} '{name}' (also in {others.entries[kind][name].plugin.name})"
        for kind, name in provided
        if name in others.entries[kind]
        and others.entries[kind][name].plugin.module is not info.module
        and others.entries[kind][name].plugin.name != info.name
    ]
    if provided:
        report.add("names are new", not clashes, "; ".join(clashes) + ": choose other names" if clashes else "")


def _check_metadata(info: PluginInfo, report: Report) -> None:
    doc = (getattr(info.module, "__doc__", None) or "").strip()
    version = info.version
    report.add("metadata: name", bool(info.name) and bool(NAME.match(info.name.lower())), info.name)
    report.add(
        "metadata: version",
        version not in ("", "unknown", "None"),
        version if version not in ("", "unknown", "None") else 'set __version__ = "0.1.0" in the module',
    )
    for key, hint in (("paper", 'the paper it implements, or "none" if it is new'), ("license", 'an SPDX id, e.g. "MIT"')):
        value = info.meta(key)
        ok = isinstance(value, str) and bool(value.strip())
        label = "licence" if key == "license" else key
        report.add(f"metadata: {label}", ok, value.strip() if ok else f"set __{key}__ = ... ({hint})")
    report.add("metadata: description", bool(doc), doc.splitlines()[0] if doc else "add a module docstring saying what it is")


def _variant(proto, kind: str, name: str):
    """The protocol with ``name`` in place of its dataset / backbone, or added to its evaluators."""
    data = proto.model_dump(mode="json")
    if kind == "dataset":
        data["dataset"] = {**data["dataset"], "name": name, "options": {}}
    elif kind == "backbone":
        data["backbone"] = {"name": name, "options": {}}
    elif kind == "evaluator":
        data["eval"]["evaluators"] = (
            [*data["eval"]["evaluators"], name] if name not in data["eval"]["evaluators"] else data["eval"]["evaluators"]
        )
    return protocols.Protocol.model_validate(data)


def _check_run(registry, info, kind, name, proto, folder, report, options, seeds, reference) -> None:
    from ssl_bench.commands.run import finished
    from ssl_bench.engine import RunConfig, execute
    from ssl_bench.results import Result

    run_proto = _variant(proto, kind, name) if kind in ("dataset", "backbone", "evaluator") else proto
    chosen = {"method": proto.defaults.method, "stream": proto.defaults.stream, "strategy": proto.defaults.strategy}
    if kind in chosen:
        chosen[kind] = name
    label = f"runs: {kind} {name}"
    out = folder if kind in chosen else folder / f"{kind}-{name}"  # a copy of the protocol: a folder of its own
    t0 = time.time()
    gains: dict[int, float] = {}
    finals: list[float] = []
    try:
        for seed in seeds:
            config = RunConfig(protocol=run_proto, seed=seed, out=out, plugins=[report.spec], **chosen, **options)
            log.info(
                "check: training %s %s under %s (method %s, stream %s, strategy %s, seed %d)",
                kind,
                name,
                proto.label,
                chosen["method"],
                chosen["stream"],
                chosen["strategy"],
                seed,
            )
            path = finished(config, registry) or execute(config, registry)
            r = Result(path)
            acc, init = r.summary.get("final_avg_acc"), r.summary.get("init_avg_acc")
            if acc is None or not 0 <= acc <= 1:
                report.add(label, False, f"seed {seed}: final accuracy {acc} is not a number in [0, 1]")
                return
            finals.append(acc)
            if init is not None:
                gains[seed] = acc - init
            report.runs.append(
                {"kind": kind, "name": name, "seed": seed, "file": str(path), "final_avg_acc": acc, "init_avg_acc": init}
            )
        report.add(
            label,
            True,
            f"{chosen['method']} / {chosen['stream']} / {chosen['strategy']}: final acc {100 * float(np.mean(finals)):.1f}% "
            f"(seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}), {time.time() - t0:.0f} s",
        )
    except UserError as err:
        report.add(label, False, str(err))
        return
    except Exception as err:  # noqa: BLE001 - the plugin's failure is a row, not a crash of the check
        where = plugin_of_exception(err)
        report.add(label, False, f"{type(err).__name__}: {err}" + (f" ({where})" if where else ""))
        return
    if kind == "method":
        _check_learning(report, name, run_proto, chosen, gains, reference)


def reference_gains(reference: Path | None, proto, stream: str, strategy: str, method: str = "simclr") -> dict[int, float]:
    """Gain over init per seed of ``method``'s runs of ``proto`` (same hash), ``stream`` and ``strategy`` in the
    folder ``reference`` (laid out as the leaderboard: ``<protocol>-v<version>/<method>/``); {} when there are none."""
    from ssl_bench.names import result_name
    from ssl_bench.results import Result, check

    if reference is None:
        return {}
    found = {}
    for seed in proto.seeds:
        path = Path(reference) / proto.label / method / result_name(proto.label, method, stream, strategy, seed)
        if not path.is_file():
            continue
        try:
            r = Result(path)
            check(r)
        except UserError as err:
            log.warning("check: not compared with %s: %s", path, err)
            continue
        s = r.summary
        if r.attrs.get("protocol_hash") == proto.hash and "init_avg_acc" in s:
            found[seed] = s["final_avg_acc"] - s["init_avg_acc"]
    return found


def _check_learning(report: Report, name: str, proto, chosen: dict[str, str], gains: dict[int, float], reference) -> None:
    """The learning row: the gain over init with its interval, beside SimCLR's, and the verdict by the report's rule."""
    from ssl_bench.results.claims.base import MIN_GAIN, learned, t_interval

    if not gains:
        report.add("learns (gain over random init)", None, "the runs store no random-init accuracy")
        return
    seeds = sorted(gains)
    iv = t_interval(gains[s] for s in seeds)
    own = iv.text(digits=1) if iv else f"{100 * gains[seeds[0]]:+.1f}"
    parts = [f"{name} {own} points ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"]
    ref = {} if name == "simclr" else reference_gains(reference, proto, chosen["stream"], chosen["strategy"])
    if ref:
        riv = t_interval(ref[s] for s in sorted(ref))
        parts.append(
            f"simclr {riv.text(digits=1) if riv else f'{100 * next(iter(ref.values())):+.1f}'} ({len(ref)} seeds, {reference})"
        )
        common = [s for s in seeds if s in ref]
        diff = t_interval(gains[s] - ref[s] for s in common)
        if diff is not None:
            side = "better than" if diff.low > 0 else "worse than" if diff.high < 0 else "indistinguishable from"
            parts.append(f"{name} - simclr {diff.text(digits=1)} (paired by seed): {side} simclr")
    elif name != "simclr":
        parts.append(
            f"simclr: no runs of {proto.label} ({chosen['stream']} / {chosen['strategy']}) in {reference} to compare with"
        )
    rule = f"a gain of at least {100 * MIN_GAIN:.0f} points with its 95% interval above 0"
    if iv is None:
        ok, verdict = None, f"not judged: one seed gives no spread (run --seeds all; the rule: {rule})"
    elif learned(iv):
        ok, verdict = True, f"learns under {proto.label} ({rule})"
    elif iv.high < 0:
        ok, verdict = False, f"worse than its random-init backbone under {proto.label}: check the loss and the recipe"
    else:
        ok, verdict = None, f"not shown to learn under {proto.label} (the report's rule: {rule})"
    report.verdict = verdict
    report.add("learns (gain over random init)", ok, "; ".join(parts) + f". Verdict: {verdict}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", required=True, metavar="NAME_OR_PATH", help="the plugin to check")
    p.add_argument("--protocol", default="smoke", help="protocol to run under (default: smoke)")
    p.add_argument(
        "--report",
        default=Path("ssl-bench-check.md"),
        type=Path,
        help="markdown block for the pull request (default: ssl-bench-check.md)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="keep the check's runs here, as sweep names them, so a later sweep skips them (default: a temporary folder)",
    )
    p.add_argument(
        "--seeds",
        default="all",
        help="seeds a method is trained under to judge whether it learns: 'all' (the protocol's, default) or e.g. 0",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=Path("leaderboard") / "results",
        help="result files with SimCLR's runs of the protocol, to compare with (default: leaderboard/results)",
    )
    p.add_argument("--data-root", help="folder holding the protocol's dataset")
    p.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")


def main(args: argparse.Namespace) -> int:
    report = run_checks(
        args.plugin,
        protocol=args.protocol,
        out=args.out,
        data_root=args.data_root,
        download=args.download,
        device=args.device,
        progress=not args.quiet,
        seeds=args.seeds,
        reference=args.reference,
    )
    block = report.markdown()
    print(report.text())
    if report.verdict:
        print(f"\nverdict: {report.verdict}")
    try:
        args.report.write_text(block, encoding="utf-8")
        where = f"also written to {args.report}"
    except OSError as err:
        where = f"could not write {args.report}: {err.strerror or err}"
    print(f"\nPaste this into your pull request ({where}):\n\n{block}")
    return 0 if report.passed else 1
