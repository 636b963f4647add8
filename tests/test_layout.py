"""The layout rules of the built-in plugins (CONTRIBUTING.md): folders by kind, files named after what they
register, no plugin importing another, and plugins reading of a run only what ``api.RunContext`` lists."""

import re
from pathlib import Path

from ssl_bench import protocol
from ssl_bench.api import RunContext
from ssl_bench.engine import RunConfig
from ssl_bench.engine.build import Run
from ssl_bench.registry import KINDS, Registry

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
FOLDERS = {
    "method": "methods",
    "stream": "streams",
    "strategy": "strategies",
    "dataset": "datasets",
    "backbone": "backbones",
    "evaluator": "evaluators",
}


def plugin_files():
    return sorted(p for p in PLUGINS.glob("*/*.py") if not p.name.startswith("_"))


def test_one_folder_per_kind_and_nothing_loose():
    assert set(FOLDERS) == set(KINDS)
    assert sorted(p.name for p in PLUGINS.iterdir() if p.is_dir() and not p.name.startswith("_")) == sorted(FOLDERS.values())
    assert [p.name for p in PLUGINS.glob("*.py")] == ["__init__.py"]
    assert all((PLUGINS / folder / "__init__.py").is_file() for folder in FOLDERS.values())


def test_each_file_is_in_its_kinds_folder_and_named_after_what_it_registers():
    reg = Registry.discover()
    by_file = {}
    for kind, entries in reg.entries.items():
        for name, entry in entries.items():
            path = Path(entry.plugin.module.__file__)
            assert path.parent.name == FOLDERS[kind], f"{kind} '{name}' is registered from {path}"
            by_file.setdefault(path, []).append(name)
    assert sorted(by_file) == plugin_files()
    for path, names in by_file.items():
        stem = path.stem.rstrip("_")
        typed = [n.replace("-", "_") for n in names]
        # one name: the file's; several: the file is named after their family (cifar: cifar10, cifar100)
        assert stem in typed or all(n.startswith(stem) for n in typed), f"{path.name} registers {names}"


def test_no_plugin_imports_another():
    offenders = [
        f"{p.relative_to(PLUGINS)}: {line.strip()}"
        for p in plugin_files()
        for line in p.read_text().splitlines()
        if "ssl_bench_plugins" in line
    ]
    assert not offenders, "plugins import plugins; move what they share into a public module of ssl_bench: " + str(offenders)


def run_context_members():
    return set(RunContext.__annotations__) | {n for n in vars(RunContext) if not n.startswith("_")}


#: public building blocks that plugins hand the run to (they read it on the plugins' behalf)
RUN_READERS = ["buffers.py", "regularizers.py", "probes.py", "distill.py"]


def test_plugins_read_only_what_run_context_lists():
    core = Path(__file__).resolve().parent.parent / "ssl_bench"
    files = plugin_files() + [core / name for name in RUN_READERS]
    used = {m for p in files for m in re.findall(r"\brun\.(\w+)", p.read_text())}
    assert used == run_context_members(), f"not in RunContext: {used - run_context_members()}"


def test_the_engines_run_provides_the_run_context(tiny_protocol, tmp_path):
    config = RunConfig(
        protocol=protocol.load(str(tiny_protocol)),
        method="simclr",
        stream="instance",
        strategy="sequential",
        seed=0,
        out=tmp_path,
    )
    run = Run(config, Registry.discover())
    assert all(hasattr(run, name) for name in run_context_members())
