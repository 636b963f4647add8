"""``ssl-bench check --plugin X``: a contributor's pre-flight before opening a pull request.

It checks, one row each: the plugin loads and its hooks have valid names and signatures
(the registry's own validation, :meth:`ssl_bench.registry.Registry.load`); it provides
something, under names no other installed plugin uses; its metadata is complete (name,
``__version__``, ``__paper__``, ``__license__``, a module docstring); and every thing it
provides trains and evaluates end to end under a protocol (``smoke`` by default):

- a method, stream or strategy runs in place of the protocol's default one;
- a backbone, dataset or evaluator runs in a copy of the protocol that names it (its hash
  then differs from the shipped protocol's: this checks that it works, nothing more).

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
) -> Report:
    """Check the plugin ``spec`` (entry-point name, module or .py file) and return the report."""
    proto = protocols.load(protocol)  # a bad --protocol is the user's error, not the plugin's
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


def _check_run(registry, info, kind, name, proto, folder, report, options) -> None:
    from ssl_bench.engine import RunConfig, execute
    from ssl_bench.results import Result

    run_proto = _variant(proto, kind, name) if kind in ("dataset", "backbone", "evaluator") else proto
    chosen = {"method": proto.defaults.method, "stream": proto.defaults.stream, "strategy": proto.defaults.strategy}
    if kind in chosen:
        chosen[kind] = name
    label = f"runs: {kind} {name}"
    config = RunConfig(
        protocol=run_proto, seed=proto.seeds[0], out=folder / f"{kind}-{name}", plugins=[report.spec], **chosen, **options
    )
    log.info(
        "check: training %s %s under %s (method %s, stream %s, strategy %s)",
        kind,
        name,
        proto.label,
        chosen["method"],
        chosen["stream"],
        chosen["strategy"],
    )
    t0 = time.time()
    try:
        path = execute(config, registry, resume=False)
        r = Result(path)
        acc = r.summary.get("final_avg_acc")
        detail = (
            f"{chosen['method']} / {chosen['stream']} / {chosen['strategy']}: final acc {100 * acc:.1f}%, "
            f"{time.time() - t0:.0f} s"
        )
        report.runs.append({"kind": kind, "name": name, "file": str(path), "final_avg_acc": acc, "seconds": time.time() - t0})
        ok = acc is not None and 0 <= acc <= 1
        report.add(label, ok, detail if ok else f"final accuracy {acc} is not a number in [0, 1]")
    except UserError as err:
        report.add(label, False, str(err))
    except Exception as err:  # noqa: BLE001 - the plugin's failure is a row, not a crash of the check
        where = plugin_of_exception(err)
        report.add(label, False, f"{type(err).__name__}: {err}" + (f" ({where})" if where else ""))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", required=True, metavar="NAME_OR_PATH", help="the plugin to check")
    p.add_argument("--protocol", default="smoke", help="protocol to run under (default: smoke)")
    p.add_argument(
        "--report",
        default=Path("ssl-bench-check.md"),
        type=Path,
        help="markdown block for the pull request (default: ssl-bench-check.md)",
    )
    p.add_argument("--out", type=Path, help="keep the check runs' result files here (default: a temporary folder)")
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
    )
    block = report.markdown()
    print(report.text())
    try:
        args.report.write_text(block, encoding="utf-8")
        where = f"also written to {args.report}"
    except OSError as err:
        where = f"could not write {args.report}: {err.strerror or err}"
    print(f"\nPaste this into your pull request ({where}):\n\n{block}")
    return 0 if report.passed else 1
