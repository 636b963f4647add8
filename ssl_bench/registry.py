"""Finds plugins, registers them with pluggy, and answers "which factory is called X?".

Plugins come from three places, all registered the same way:
the built-ins (every module of the sub-packages of ``ssl_bench_plugins``, i.e. ``plugins/methods/``,
``plugins/streams/`` and so on),
installed packages that declare an entry point in the ``ssl_bench`` group, and
``--plugin NAME_OR_PATH`` (an entry-point name, an importable module or a ``.py`` file).
A plugin that fails to load is recorded with its error instead of stopping everything;
only a plugin the user asked for makes a command fail.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata as md
import importlib.util
import inspect
import logging
import pkgutil
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from ssl_bench import hookspecs
from ssl_bench.errors import UserError, did_you_mean
from ssl_bench.names import NAME_PATTERN

log = logging.getLogger(__name__)

#: plugin kind -> the hook that returns its factories
KINDS = {
    "method": "ssl_bench_methods",
    "stream": "ssl_bench_streams",
    "strategy": "ssl_bench_strategies",
    "dataset": "ssl_bench_datasets",
    "backbone": "ssl_bench_backbones",
    "evaluator": "ssl_bench_evaluators",
}
HOOK_NAMES = {name for name in dir(hookspecs) if name.startswith("ssl_bench_")}
ENTRY_POINT_GROUP = "ssl_bench"
BUILTIN_PACKAGE = "ssl_bench_plugins"
#: source file -> plugin name, so an error raised inside plugin code can name its plugin
PLUGIN_FILES: dict[str, str] = {}


@dataclass
class PluginInfo:
    """One plugin as found: where it came from, its metadata, and the error if it is broken."""

    name: str
    source: str  #: "builtin", "entry point (dist)", "module", or "file PATH"
    version: str = "unknown"
    module: Any = None
    error: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)

    def meta(self, key: str) -> str | None:
        return getattr(self.module, f"__{key}__", None) if self.module is not None else None


@dataclass
class Entry:
    """A named factory and the plugin that provides it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: PluginInfo


class Registry:
    """The plugin manager plus the tables of named factories it was given."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("ssl_bench")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.requested: list[PluginInfo] = []  #: the plugins the user named, in order

    # ------------------------------------------------------------------ discovery
    @classmethod
    def discover(cls, extra: Sequence[str] = ()) -> Registry:
        """Load the built-ins, the installed entry points and the ``extra`` plugins the user named."""
        reg = cls()
        reg.load_builtins()
        reg.load_entry_points()
        reg.requested = [reg.load(spec) for spec in extra]
        return reg

    def load_builtins(self) -> None:
        """Every module in the sub-packages of ``ssl_bench_plugins`` (one per kind), by folder, then file name.

        A built-in plugin is named after its file, without the trailing ``_`` of a keyword (``class_.py``: ``class``).
        """
        package = importlib.import_module(BUILTIN_PACKAGE)
        for folder in sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg):
            sub = importlib.import_module(f"{BUILTIN_PACKAGE}.{folder}")
            for mod in sorted(pkgutil.iter_modules(sub.__path__), key=lambda m: m.name):
                if mod.name.startswith("_") or mod.ispkg:
                    continue
                module = f"{sub.__name__}.{mod.name}"
                self._add(mod.name.rstrip("_"), "builtin", functools.partial(importlib.import_module, module), required=False)

    def load_entry_points(self) -> None:
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "unknown"
            self._add(ep.name, f"entry point ({dist})", ep.load, required=False, version=version)

    def load(self, spec: str) -> PluginInfo:
        """Load a plugin the user asked for; any problem is a :class:`UserError`."""
        path = Path(spec)
        if spec.endswith(".py") or path.is_file():
            if not path.is_file():
                raise UserError(
                    f"plugin file '{spec}' does not exist; give an existing .py file, a module name or an installed plugin name"
                )
            return self._add(path.stem, f"file {path}", lambda: _import_file(path), required=True)
        if spec in self.plugins:
            info = self.plugins[spec]
            if info.error:
                raise UserError(f"plugin '{spec}' ({info.source}) is broken: {info.error}")
            return info
        for ep in md.entry_points(group=ENTRY_POINT_GROUP, name=spec):
            return self._add(spec, f"entry point ({ep.dist.name if ep.dist else '?'})", ep.load, required=True)
        if importlib.util.find_spec(spec.split(".")[0]) is None:
            raise UserError(
                f"no plugin named '{spec}': it is not an installed ssl_bench entry point, an importable module or a .py file."
                + did_you_mean(spec, self.plugins)
            )
        return self._add(spec.rsplit(".", 1)[-1], "module", lambda: importlib.import_module(spec), required=True)

    def _add(self, name: str, source: str, loader: Callable[[], Any], required: bool, version: str | None = None) -> PluginInfo:
        info = PluginInfo(name=name, source=source)
        try:
            module = loader()
            info.module = module
            info.version = version or str(getattr(module, "__version__", "unknown"))
            self._register(info)
        except UserError as err:
            info.error = str(err)
        except Exception as err:  # noqa: BLE001 - any failure of foreign code is reported, not raised
            info.error = f"{type(err).__name__}: {err}".strip()
        if info.error:
            self.plugins[name] = info
            if required:
                raise UserError(f"plugin '{name}' ({source}) cannot be loaded: {info.error}")
            log.warning("plugin '%s' (%s) is broken and was skipped: %s", name, source, info.error)
            return info
        self.plugins[name] = info
        source_file = getattr(info.module, "__file__", None)
        if source_file:
            PLUGIN_FILES[str(Path(source_file).resolve())] = name
        return info

    def _register(self, info: PluginInfo) -> None:
        module = info.module
        if self.pm.is_registered(module):
            return
        # catch misspelt hooks before pluggy does, with a message that names the plugin
        for attr in dir(module):
            fn = getattr(module, attr, None)
            if not (callable(fn) and hasattr(fn, "ssl_bench_impl")):
                continue
            if attr not in HOOK_NAMES:
                raise UserError(f"'{attr}' is not an ssl-bench hook." + did_you_mean(attr, HOOK_NAMES))
            allowed = list(inspect.signature(getattr(hookspecs, attr)).parameters)
            extra = [a for a in inspect.signature(fn).parameters if a not in allowed]
            if extra:
                raise UserError(
                    f"hook {attr} has the wrong signature: it takes {', '.join(extra)}, "
                    f"but the hook passes only ({', '.join(allowed)})"
                )
        try:
            self.pm.register(module, name=f"{info.source}:{info.name}")
        except pluggy.PluginValidationError as err:
            raise UserError(f"a hook has the wrong signature: {' '.join(str(err).split())}") from None
        try:
            found = self._collect(module)
        except Exception:
            self.pm.unregister(module)
            raise
        explicit = not info.source.startswith(("builtin", "entry point"))
        for kind, factories in found.items():
            for fname, factory in factories.items():
                old = self.entries[kind].get(fname)
                if old is not None and not explicit:
                    log.warning("%s '%s' from %s is shadowed by the one from %s", kind, fname, info.name, old.plugin.name)
                    continue
                self.entries[kind][fname] = Entry(kind, fname, factory, info)
                info.provides.setdefault(kind, []).append(fname)

    def _collect(self, module: Any) -> dict[str, dict[str, Callable[..., Any]]]:
        found: dict[str, dict[str, Callable[..., Any]]] = {}
        for kind, hook in KINDS.items():
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin is not module:
                    continue
                result = impl.function()
                if not isinstance(result, dict) or not all(isinstance(k, str) and callable(v) for k, v in result.items()):
                    raise UserError(f"{hook}() must return a dict of {{name: callable}}, got {type(result).__name__}")
                for name in result:
                    if not NAME_PATTERN.fullmatch(name) or (kind == "strategy" and "+" in name):
                        allowed = "'-', '_', '.'" + ("" if kind == "strategy" else ", '+'")
                        raise UserError(
                            f"{kind} name {name[:80]!r} is not allowed: use at most 64 letters, digits and "
                            f"{allowed}, starting with a letter or digit"
                        )
                found[kind] = result
        return found

    # ------------------------------------------------------------------ lookup
    def get(self, kind: str, name: str) -> Entry:
        """The factory registered as ``name``; unknown names get a "did you mean"."""
        table = self.entries[kind]
        if name in table:
            return table[name]
        broken = [p for p in self.plugins.values() if p.error]
        hint = f" ({len(broken)} plugin(s) failed to load; run 'ssl-bench list')" if broken else ""
        raise UserError(f"unknown {kind} '{name}'." + did_you_mean(name, table) + hint)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def default_for(self, kind: str) -> str | None:
        """The one ``kind`` the user's ``--plugin`` plugins provide, if exactly one; else None."""
        offered = [n for p in self.requested for n in p.provides.get(kind, [])]
        return offered[0] if len(offered) == 1 else None

    def observers(self) -> Any:
        """The hook caller for run observers (``registry.observers().ssl_bench_step_end(...)``)."""
        return self.pm.hook


def plugin_of_exception(exc: BaseException) -> str | None:
    """``plugin (file:line)`` of the innermost traceback frame inside plugin code, if any."""
    where = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        path = str(Path(frame.f_code.co_filename).resolve())
        if path in PLUGIN_FILES:
            where = f"plugin '{PLUGIN_FILES[path]}' ({Path(path).name}:{lineno})"
    return where


def _import_file(path: Path) -> ModuleType:
    module_name = f"ssl_bench_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"plugin file '{path}' cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
