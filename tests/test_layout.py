"""The layout rules (ARCHITECTURE.md, CONTRIBUTING.md): plugins in one folder per kind, each file named after what it
registers, no plugin importing another or anything of the core but its public modules (one list: pyproject.toml's
``[tool.mypy] files``), plugins reading of a run only what ``api.RunContext`` lists, the core's wings as
ARCHITECTURE.md maps them, no runtime import cycle, and the deprecated import paths still working.

Imports are read with ``ast``, not searched as text, so ``from .. import x`` and aliased imports are seen."""

from __future__ import annotations

import ast
import importlib
import re
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from ssl_bench import _moved, protocol
from ssl_bench.api import RunContext
from ssl_bench.engine import RunConfig
from ssl_bench.engine.build import Run
from ssl_bench.plan import make_plan
from ssl_bench.registry import KINDS, Registry

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
CORE = ROOT / "ssl_bench"
FOLDERS = {
    "method": "methods",
    "stream": "streams",
    "strategy": "strategies",
    "dataset": "datasets",
    "backbone": "backbones",
    "evaluator": "evaluators",
}


def public_modules() -> set[str]:
    """The public modules: pyproject.toml's ``[tool.mypy] files``, as module names."""
    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    return {".".join(Path(f).with_suffix("").parts).removesuffix(".__init__") for f in files}


def module_name(path: Path) -> str:
    parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def plugin_files() -> list[Path]:
    return sorted(p.resolve() for p in PLUGINS.glob("*/*.py") if not p.name.startswith("_"))


def imports(path: Path, runtime_only: bool = False, names_only: bool = False) -> list[tuple[str, int]]:
    """``(module, level)`` of every import in ``path``: ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a``
    and ``a.b`` (``a.b`` is module ``a.b`` or name ``b`` of module ``a``), or with ``names_only`` just ``a.b`` (so
    that ``from package import submodule`` is not counted as importing the package's ``__init__``). With
    ``runtime_only``, imports under ``if TYPE_CHECKING:`` are left out."""
    tree = ast.parse(path.read_text())
    skipped = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if not names_only:
                found.append((base, node.level))
            found += [(f"{base}.{a.name}" if base else a.name, node.level) for a in node.names]
    return found


# ------------------------------------------------------------------------------------------------ plugins


def test_one_folder_per_kind_and_nothing_loose():
    assert set(FOLDERS) == set(KINDS)
    assert sorted(p.name for p in PLUGINS.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))) == sorted(
        FOLDERS.values()
    )
    assert [p.name for p in PLUGINS.glob("*.py")] == ["__init__.py"]
    assert all((PLUGINS / folder / "__init__.py").is_file() for folder in FOLDERS.values())


def test_each_file_is_in_its_kinds_folder_and_named_after_what_it_registers():
    reg = Registry.discover()
    by_file: dict[Path, list[str]] = {}
    for kind, entries in reg.entries.items():
        for name, entry in entries.items():
            path = Path(entry.plugin.module.__file__).resolve()
            assert path.parent.name == FOLDERS[kind], f"{kind} '{name}' is registered from {path}"
            by_file.setdefault(path, []).append(name)
    assert sorted(by_file) == plugin_files()
    for path, names in by_file.items():
        stem = path.stem.rstrip("_")
        typed = [n.replace("-", "_") for n in names]
        # one name: the file's; several: the file is named after their family (cifar: cifar10, cifar100)
        assert stem in typed or all(n.startswith(stem) for n in typed), f"{path.name} registers {names}"


def test_no_plugin_imports_another_plugin():
    offenders = [
        f"{p.relative_to(PLUGINS)}: {name or '.'} (level {level})"
        for p in plugin_files()
        for name, level in imports(p)
        if level > 0 or name.split(".")[0] == "ssl_bench_plugins"
    ]
    assert not offenders, "plugins import plugins; move what they share into a public module of ssl_bench: " + str(offenders)


def test_plugins_and_the_template_import_only_public_modules():
    public = public_modules()
    modules = {m for m in public}
    files = plugin_files() + sorted((ROOT / "examples").rglob("*.py"))
    offenders = []
    for p in files:
        for name, level in imports(p):
            if level or not name.startswith("ssl_bench."):
                continue
            # `from ssl_bench.blocks import heads` names a module; `from ssl_bench.api import Method` a name in one
            if name not in modules and name.rsplit(".", 1)[0] not in modules:
                offenders.append(f"{p.relative_to(ROOT)}: {name}")
    assert not offenders, f"not public (pyproject.toml [tool.mypy] files): {offenders}"


def test_the_checker_sees_a_relative_import_between_plugins(tmp_path):
    """The rule above reads imports, not text: a relative import between plugins is caught (the old text
    search for ``ssl_bench_plugins`` missed it)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..methods import simclr\nfrom ssl_bench.engine import build as b\n")
    assert ("..methods", 2) not in imports(bad)  # module and level are apart
    assert [level for _, level in imports(bad)][:2] == [2, 2]
    assert ("ssl_bench.engine.build", 0) in imports(bad)


def run_context_members() -> set[str]:
    return set(RunContext.__annotations__) | {n for n in vars(RunContext) if not n.startswith("_")}


#: public building blocks that plugins hand the run to (they read it on the plugins' behalf)
RUN_READERS = ["buffers.py", "regularizers.py", "probes.py", "distill.py"]


def test_plugins_read_only_what_run_context_lists():
    files = plugin_files() + [CORE / "blocks" / name for name in RUN_READERS]
    used = {m for p in files for m in re.findall(r"\brun\.(\w+)", p.read_text())}
    assert used <= run_context_members(), f"not in RunContext: {used - run_context_members()}"


def test_the_engines_run_provides_the_run_context(tiny_protocol, tmp_path):
    config = RunConfig(
        protocol=protocol.load(str(tiny_protocol)),
        method="simclr",
        stream="instance",
        strategy="sequential",
        seed=0,
        out=tmp_path,
    )
    run = Run(make_plan(config, Registry.discover()))
    assert all(hasattr(run, name) for name in run_context_members())


# ------------------------------------------------------------------------------------------------ the core


def runtime_graph() -> dict[str, set[str]]:
    """Module -> the ssl_bench modules it imports at run time (anywhere in the file, ``TYPE_CHECKING`` left out)."""
    mods = {module_name(p): p for p in CORE.rglob("*.py")}

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        found = imports(path, runtime_only=True, names_only=True)
        targets = {owner(name) for name, level in found if not level and name.startswith("ssl_bench")}
        graph[mod] = {t for t in targets if t and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_runtime_import_cycle():
    assert cycles(runtime_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def architecture_paths() -> set[str]:
    """The paths that ARCHITECTURE.md's map of the core names (first column of its tables under "The core")."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## The core", 1)[1].split("\n## ", 1)[0]
    return {
        m for row in section.splitlines() if row.startswith("| `") for m in re.findall(r"`(ssl_bench/[^`]+)`", row.split("|")[1])
    }


def test_architecture_maps_exactly_the_core_on_disk():
    on_disk = {p.relative_to(ROOT).as_posix() for p in CORE.rglob("*.py") if p.name != "__init__.py"} | {"ssl_bench/__init__.py"}
    on_disk |= {p.relative_to(ROOT).as_posix() + "/" for p in CORE.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    on_disk -= {"ssl_bench/"}
    mapped = architecture_paths()
    assert mapped == on_disk, (
        f"on disk, not in ARCHITECTURE.md: {sorted(on_disk - mapped)}; mapped, not on disk: {sorted(mapped - on_disk)}"
    )


def test_contributing_lists_the_public_modules():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    table = text.split("### Public modules", 1)[1].split("\n#", 1)[0]
    listed = {
        m for row in table.splitlines() if row.startswith("| `") for m in re.findall(r"`(ssl_bench[\w.]*)`", row.split("|")[1])
    }
    assert listed == public_modules()
    for doc in ("README.md", ".github/pull_request_template.md", "examples/plugin-template/README.md"):
        assert "CONTRIBUTING.md#public-modules" in (ROOT / doc).read_text(), f"{doc} should point to the one list"


def test_every_public_module_imports():
    for name in sorted(public_modules()):
        importlib.import_module(name)


@pytest.mark.parametrize("old, new", sorted(_moved.MOVED.items()))
def test_old_import_paths_warn_and_give_the_same_module(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
