"""Old import paths of the public modules that moved into wings in 0.2, kept working until 0.3.

``import ssl_bench.heads`` (or ``from ssl_bench import heads``) still gives the module, now at
:mod:`ssl_bench.blocks.heads`, with a :class:`DeprecationWarning` naming the new path. The old name is
an alias of the same module object (``ssl_bench.heads is ssl_bench.blocks.heads``), so attributes,
private names and monkeypatching behave as before. One table, :data:`MOVED`; tests/test_layout.py
imports every old name and checks the warning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

#: old module -> new module (public modules only; the rest moved without an alias)
MOVED = {
    "ssl_bench.augment": "ssl_bench.blocks.augment",
    "ssl_bench.backbones": "ssl_bench.blocks.backbones",
    "ssl_bench.buffers": "ssl_bench.blocks.buffers",
    "ssl_bench.class_groups": "ssl_bench.blocks.class_groups",
    "ssl_bench.distill": "ssl_bench.blocks.distill",
    "ssl_bench.domain_transforms": "ssl_bench.blocks.domain_transforms",
    "ssl_bench.heads": "ssl_bench.blocks.heads",
    "ssl_bench.imagecache": "ssl_bench.blocks.imagecache",
    "ssl_bench.imagefiles": "ssl_bench.blocks.imagefiles",
    "ssl_bench.manifest": "ssl_bench.blocks.splits",
    "ssl_bench.probes": "ssl_bench.blocks.probes",
    "ssl_bench.regularizers": "ssl_bench.blocks.regularizers",
    "ssl_bench.vit": "ssl_bench.blocks.transformer",
    "ssl_bench.continual": "ssl_bench.results.continual",
}
REMOVED_IN = "0.3"


class _Alias(importlib.abc.Loader):
    """Imports the new module and puts it in ``sys.modules`` under the old name (the import returns it)."""

    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a placeholder module, replaced in exec_module

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__
        warnings.warn(
            f"{old} moved to {self.new}; import it from there (the old path goes in ssl-bench {REMOVED_IN})",
            DeprecationWarning,
            stacklevel=2,
        )
        sys.modules[old] = importlib.import_module(self.new)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(name)
        return importlib.util.spec_from_loader(name, _Alias(new)) if new else None


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (called by ``ssl_bench/__init__.py``)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
