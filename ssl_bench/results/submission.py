"""``ssl-bench submit``: validate result files and copy them into the leaderboard folder.

A file is accepted only when

- it passes :func:`ssl_bench.results.check`, the checks the leaderboard makes too: a result
  file of the schema version this ssl-bench reads, within the size limits; every identity
  attribute (protocol, version, hash, method, stream, strategy, seed) equals the run's stored
  configuration; the stored protocol text hashes to ``protocol_hash``; its ``summary``
  numbers are exactly what :func:`ssl_bench.results.continual.summarize` computes from its arrays
  (a hand-edited number is rejected with the key that disagrees); and its content hash,
  written with the file, matches its contents;
- its protocol is a shipped one, with the same version and hash as the shipped file of that version today
  (the current one, or an older version kept in ``protocols/versions/``: :func:`ssl_bench.protocol.load_shipped`);
- its seed is one of the protocol's seeds, and the submission of each method x stream x
  strategy holds *all* the protocol's seeds (counting files already in the leaderboard);
- every plugin it loaded recorded a version, including each plugin named with ``--plugin``;
- its accuracy matrix has one column per experience of the protocol, values in [0, 1].

This shows that a file was not edited after its run and that it claims the shipped
protocol; it is not a signature: a consistent forgery (arrays made up, then summarised and
hashed the way ssl-bench does) passes. Only re-running detects that: ``ssl-bench verify``
re-runs a file's seed under a CPU-sized protocol and compares.

The target is the ``leaderboard/results`` folder of an ssl-bench checkout (:func:`target`: ``--to``, else the
checkout holding the current folder), and every plugin a file's run needs (its method, stream and strategies)
must be loadable there the way CI loads plugins (:func:`check_loadable`): a built-in module under the
checkout's ``plugins/``, or a package pinned in its ``leaderboard/plugins.txt`` (:data:`PLUGINS_FILE`), which
the leaderboard workflow installs (``.ci/leaderboard``) before it re-checks and re-runs the files.

Accepted files are copied to ``<to>/<protocol>-v<version>/<method>/<canonical name>.h5``.
"""

from __future__ import annotations

import filecmp
import importlib.metadata as md
import json
import logging
import re
import shutil
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_bench import protocol as protocols
from ssl_bench.errors import UserError
from ssl_bench.results import REQUIRED_ATTRS, Result, check, crashing, result_name

log = logging.getLogger(__name__)

DEFAULT_TO = Path("leaderboard") / "results"
#: the outside plugins CI installs, one pinned requirement a line (relative to the checkout's root)
PLUGINS_FILE = Path("leaderboard") / "plugins.txt"


@dataclass
class Accepted:
    source: Path
    destination: Path
    result: Result

    @property
    def group(self) -> tuple[str, str, str, str, str]:
        a = self.result.attrs
        return a["protocol_hash"], a["method"], a["stream"], a["strategy"], _variant(self.result) or ""


def plugin_name(spec: str) -> str:
    """The name the registry gives a plugin named by ``--plugin spec``."""
    return Path(spec).stem if spec.endswith(".py") else spec.rsplit(".", 1)[-1]


def _variant(r: Result) -> str | None:
    """The run identity of a file that changed the defaults (its file name carries it), else None."""
    return str(r.attrs.get("run_identity")) if r.attrs.get("variant") else None


def _precision_tag(r: Result) -> str | None:
    """The precision a file's name ends in (a run of another precision than its protocol's), else None."""
    return str(r.attrs.get("precision_tag") or "") or None


def destination(to: Path, r: Result) -> Path:
    a = r.attrs
    label = f"{a['protocol']}-v{a['protocol_version']}"
    name = result_name(label, a["method"], a["stream"], a["strategy"], int(a["seed"]), _variant(r), _precision_tag(r))
    folder = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in str(a["method"]))
    return Path(to) / label / folder / name


def validate(path: str | Path) -> Result:
    """Read one result file and check it on its own; any problem is a UserError naming the file."""
    r = Result(path)  # schema version, size limits
    where = r.where
    r.require(REQUIRED_ATTRS)
    a = r.attrs
    proto = _shipped_protocol(a["protocol"], a["protocol_version"], where)
    if a["protocol_version"] != proto.version or a["protocol_hash"] != proto.hash:
        raise UserError(
            f"{where} was made under protocol {a['protocol']} v{a['protocol_version']} with hash "
            f"{str(a['protocol_hash'])[:12]}, but the shipped {proto.label} has hash {proto.hash[:12]}: "
            "re-run it with this version of ssl-bench"
        )
    check(r)  # identity = stored config, stored protocol, matrix, summary recomputed, content hash
    if a["seed"] not in proto.seeds:
        raise UserError(f"{where} has seed {a['seed']}, which is not one of the protocol's seeds {proto.seeds}")
    _check_plugins(r, where)
    _check_matrix(r, proto, where)
    return r


def _shipped_protocol(name: str, version: object, where: str):
    """The shipped protocol of the file's version (a kept older one too), else its current version."""
    if not isinstance(name, str) or name not in protocols.shipped():
        raise UserError(
            f"{where} was made under protocol '{name}', which does not ship with ssl-bench "
            f"({', '.join(protocols.shipped())}); the leaderboard takes shipped protocols only"
        )
    kept = protocols.load_shipped(name, version) if isinstance(version, int) else None
    return kept if kept is not None else protocols.load(name)


def _check_plugins(r: Result, where: str) -> None:
    raw = r.attrs["plugins"]
    try:
        recorded = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        recorded = None
    if not isinstance(recorded, dict) or not recorded:
        raise UserError(f"{where}: its 'plugins' attribute records no plugin versions")
    for spec in r.config.get("plugins", []):
        if plugin_name(spec) not in recorded:
            raise UserError(f"{where}: the run loaded plugin '{spec}' but recorded no version for it")
    unversioned = sorted(name for name, version in recorded.items() if str(version).strip() in ("", "unknown", "None"))
    if unversioned:
        raise UserError(
            f"{where}: plugin(s) {', '.join(unversioned)} recorded no version; set __version__ in the "
            "plugin module (or install it as a package) and re-run"
        )


def _check_matrix(r: Result, proto, where: str) -> None:
    acc = r.acc_matrix  # 2-D, in [0, 1]: results.check
    if acc.shape[1] != proto.stream.n_experiences:
        raise UserError(
            f"{where}: metrics/acc_matrix has shape {acc.shape}, expected [phases, "
            f"{proto.stream.n_experiences}] for {proto.label}"
        )


# ---------------------------------------------------------------------- the target checkout
def is_checkout(folder: Path) -> bool:
    """A folder holding an ssl-bench checkout: ``pyproject.toml`` of the project ``ssl-bench`` and ``plugins/``."""
    try:
        project = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return project.get("name") == "ssl-bench" and (folder / "plugins").is_dir()


def checkout_of(folder: Path) -> Path | None:
    """The ssl-bench checkout that holds ``folder`` (it, or the nearest folder above it), else None."""
    folder = folder.resolve()
    return next((f for f in (folder, *folder.parents) if is_checkout(f)), None)


def target(to: str | Path | None) -> tuple[Path, Path]:
    """(the absolute results folder to submit to, its checkout's root): ``to``, which must be
    ``<checkout>/leaderboard/results``, else that folder of the checkout holding the current folder."""
    if to is None:
        root = checkout_of(Path.cwd())
        if root is None:
            raise UserError(
                f"'{Path.cwd()}' is not inside an ssl-bench checkout: run submit in your clone of ssl-bench, "
                "or give --to PATH/TO/ssl-bench/leaderboard/results"
            )
        return root / DEFAULT_TO, root
    folder = Path(to).resolve()
    root = folder.parent.parent
    if folder.name != "results" or folder.parent.name != "leaderboard" or not is_checkout(root):
        raise UserError(
            f"--to '{folder}' is not the leaderboard/results folder of an ssl-bench checkout; "
            "give PATH/TO/ssl-bench/leaderboard/results (of your clone of ssl-bench)"
        )
    return folder, root


def pinned_plugins(root: Path) -> dict[str, str]:
    """The packages ``<root>/leaderboard/plugins.txt`` pins: canonical distribution name -> version (``==``), or
    "" for a URL pinned to a git commit or a sha256. A line that pins nothing is a UserError naming it."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    path = root / PLUGINS_FILE
    if not path.is_file():
        return {}
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = re.sub(r"(^|\s)#.*$", "", line).strip()  # pip's comments; a URL's '#sha256=' stays
        if not text:
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement as err:
            raise UserError(f"{path}:{number}: '{text}' is not a requirement ({err})") from None
        specs = list(req.specifier)
        if req.url:
            if not (re.search(r"@[0-9a-f]{40}$", req.url) or re.search(r"#sha256=[0-9a-f]{64}$", req.url)):
                raise UserError(
                    f"{path}:{number}: '{text}' is not pinned: a URL must end in @COMMIT (40 hex digits) "
                    "or #sha256=HASH, so that CI installs exactly the code that made the results"
                )
            version = ""
        elif len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
            version = specs[0].version
        else:
            raise UserError(
                f"{path}:{number}: '{text}' is not pinned: write {req.name}==VERSION (a release) or "
                f"{req.name} @ git+https://...@COMMIT, so that CI installs exactly the code that made the results"
            )
        pins[canonicalize_name(req.name)] = version
    return pins


def needs(r: Result) -> list[tuple[str, str]]:
    """(kind, name) of the plugins a run's file names: its method, stream and each strategy of ``a+b``."""
    a = r.attrs
    return [("method", str(a["method"])), ("stream", str(a["stream"]))] + [("strategy", s) for s in str(a["strategy"]).split("+")]


def check_loadable(results: list[Result], root: Path, registry=None) -> None:
    """Every plugin the files' runs need is loadable in the checkout ``root`` the way CI loads plugins: a built-in
    whose module is in ``root/plugins/``, or a package pinned in ``root/leaderboard/plugins.txt`` (at the version
    the run recorded); plugins a run named with ``--plugin`` must be one of those too. Else a UserError with the fix."""
    from packaging.utils import canonicalize_name

    from ssl_bench.registry import ENTRY_POINT_GROUP, Registry

    if not results:
        return
    registry = registry or Registry.discover()
    pins = pinned_plugins(root)
    listed = root / PLUGINS_FILE

    def fix(kind: str) -> str:
        folder = {"strategy": "strategies"}.get(kind, kind + "s")
        return (
            f"either add its module to {root / 'plugins' / folder}/ in the same pull request, or package it "
            f"(examples/plugin-template), publish it (a release, or a pushed git commit) and pin it in {listed}"
        )

    for r in results:
        recorded = r.attrs["plugins"]
        recorded = json.loads(recorded) if isinstance(recorded, str) else dict(recorded)
        for spec in r.config.get("plugins") or []:
            spec = str(spec)
            if spec.endswith(".py") or "/" in spec:
                raise UserError(
                    f"{r.where}: its run loaded the plugin file '{spec}' (--plugin), which CI cannot load; "
                    f"{fix('method')}, then re-run without --plugin"
                )
        for kind, name in needs(r):
            entry = registry.entries[kind].get(name)
            if entry is None:
                raise UserError(
                    f"{r.where}: no plugin installed here provides the {kind} '{name}', so CI could not re-run it; {fix(kind)}"
                )
            plugin = entry.plugin
            if plugin.source == "builtin":
                module = Path(*plugin.module.__name__.split(".")[1:]).with_suffix(".py")
                if not (root / "plugins" / module).is_file():
                    raise UserError(
                        f"{r.where}: the {kind} '{name}' is the built-in {module} of the ssl-bench installed here, "
                        f"but {root} has no plugins/{module}; {fix(kind)}"
                    )
                continue
            eps = list(md.entry_points(group=ENTRY_POINT_GROUP, name=plugin.name))
            dist = eps[0].dist.name if eps and eps[0].dist is not None else None
            if dist is None:
                raise UserError(f"{r.where}: the {kind} '{name}' comes from '{plugin.source}', which CI cannot load; {fix(kind)}")
            pin = pins.get(canonicalize_name(dist))
            version = str(recorded.get(plugin.name, ""))
            if pin is None:
                raise UserError(
                    f"{r.where}: the {kind} '{name}' comes from the package {dist} {version}, which {listed} does not "
                    f"list, so CI could not install it: add the line '{dist}=={version}' (a release) or "
                    f"'{dist} @ git+https://URL@COMMIT' there, or add its module to {root / 'plugins'}/ instead"
                )
            if pin and pin != version:
                raise UserError(
                    f"{r.where}: {listed} pins {dist}=={pin}, but the run used {dist} {version}: "
                    "pin the version the runs used, or re-run them with the pinned one"
                )


def submit(
    paths: list[str | Path],
    to: str | Path | None = None,
    check_only: bool = False,
    replace: bool = False,
    registry=None,
) -> list[Accepted]:
    """Validate ``paths`` (all or nothing) and, unless ``check_only``, copy them into ``to``: the
    ``leaderboard/results`` folder of an ssl-bench checkout (:func:`target`; default: the checkout holding the
    current folder), from which every plugin the runs need must be loadable (:func:`check_loadable`)."""
    if not paths and not check_only:
        raise UserError("give the result files to submit")
    crashed = crashing([Path(p) for p in paths if Path(p).is_file()])
    checked = []
    for path in paths:  # each file on its own first: a bad file is named whatever the target
        if Path(path) in crashed:
            raise UserError(crashed[Path(path)])
        checked.append(validate(path))
    to, root = target(to)
    pinned_plugins(root)  # a line that pins nothing fails even when no file needs it
    accepted: list[Accepted] = []
    seen: dict[Path, Path] = {}
    for path, r in zip(paths, checked):
        dest = destination(to, r)
        if dest in seen:
            raise UserError(
                f"'{path}' and '{seen[dest]}' are the same run (protocol, method, stream, strategy, seed); submit one"
            )
        seen[dest] = Path(path)
        if check_only:
            if _inside(Path(path), to) and Path(path).resolve() != dest.resolve():
                raise UserError(f"'{path}' is in the wrong place: it belongs at '{dest}'")
        elif (
            dest.exists()
            and Path(path).resolve() != dest.resolve()
            and not filecmp.cmp(path, dest, shallow=False)
            and not replace
        ):
            raise UserError(f"'{dest}' already holds a different result of this run; pass --replace to overwrite it")
        accepted.append(Accepted(Path(path), dest, r))
    _check_seeds(accepted, to)
    check_loadable([item.result for item in accepted], root, registry)
    if not check_only:
        for item in accepted:
            item.destination.parent.mkdir(parents=True, exist_ok=True)
            if item.source.resolve() != item.destination.resolve():
                tmp = item.destination.with_name(f".{item.destination.name}.tmp")
                shutil.copyfile(item.source, tmp)
                tmp.replace(item.destination)
    return accepted


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _check_seeds(accepted: list[Accepted], to: Path) -> None:
    """Each method x stream x strategy must come with every seed of its protocol (files already there count)."""
    groups: dict[tuple, set[int]] = defaultdict(set)
    example: dict[tuple, Accepted] = {}
    for item in accepted:
        groups[item.group].add(int(item.result.attrs["seed"]))
        example.setdefault(item.group, item)
    for group, seeds in groups.items():
        item = example[group]
        a = item.result.attrs
        proto = protocols.load_shipped(a["protocol"], a["protocol_version"]) or protocols.load(a["protocol"])
        for seed in proto.seeds:  # already in the leaderboard under the same name and hash
            if seed not in seeds and _existing_seed(item, to, seed):
                seeds.add(seed)
        missing = sorted(set(proto.seeds) - seeds)
        if missing:
            _, method, stream, strategy, _variant_id = group
            raise UserError(
                f"{method} / {stream} / {strategy} under {proto.label} needs all the protocol's seeds "
                f"{proto.seeds}; seed(s) {missing} are missing: run them "
                f"(ssl-bench sweep --methods {method} --streams {stream} --strategies {strategy}) and submit them together"
            )


def _existing_seed(item: Accepted, to: Path, seed: int) -> bool:
    a = item.result.attrs
    label = f"{a['protocol']}-v{a['protocol_version']}"
    variant, tag = _variant(item.result), _precision_tag(item.result)
    path = item.destination.with_name(result_name(label, a["method"], a["stream"], a["strategy"], seed, variant, tag))
    if not path.is_file():
        return False
    try:
        other = Result(path)
    except UserError:
        return False
    return other.attrs.get("protocol_hash") == a["protocol_hash"]


def describe(item: Accepted) -> dict[str, Any]:
    a = item.result.attrs
    return {
        "file": str(item.destination),
        "method": a["method"],
        "stream": a["stream"],
        "strategy": a["strategy"],
        "seed": int(a["seed"]),
        "final_avg_acc": item.result.summary.get("final_avg_acc"),
    }
