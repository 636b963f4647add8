"""Backbone registry in the style of timm's ``register_model``: decorate a factory, and it is a backbone.

The registry of backbones *is* the ``ssl_bench_backbones`` hook (like every other kind of plugin);
:func:`register_backbone` is sugar for it. In a plugin module::

    from ssl_bench.blocks.backbones import register_backbone

    @register_backbone
    def vit_tiny(patch: int = 4) -> nn.Module:   # users type --protocol ... backbone.name = "vit_tiny"
        ...

The decorator records the factory in a table of its module and gives the module an
``ssl_bench_backbones`` hook implementation returning that table, so the module needs no hook
of its own. A module that writes its own ``ssl_bench_backbones`` hook should return
``registered(__name__)`` (plus anything else) from it instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ssl_bench import hookimpl

#: module name -> {backbone name: factory}
_TABLES: dict[str, dict[str, Callable]] = {}
_MARK = "_ssl_bench_backbone_registry"
F = TypeVar("F", bound=Callable[..., Any])


def registered(module_name: str) -> dict[str, Callable]:
    """The backbones registered with :func:`register_backbone` in module ``module_name``."""
    return dict(_TABLES.get(module_name, {}))


def register_backbone(fn: F | None = None, *, name: str | None = None) -> Any:
    """Register ``fn`` (a factory ``fn(**options) -> nn.Module`` with ``feature_dim``) under ``name`` or its own name."""

    def add(factory: F) -> F:
        module_name = factory.__module__
        namespace = getattr(factory, "__globals__", None)
        if namespace is None:  # a class: its module's namespace
            namespace = vars(sys.modules[module_name])
        table = _TABLES.setdefault(module_name, {})
        key = name or factory.__name__
        if key in table and table[key] is not factory:
            raise ValueError(f"backbone '{key}' is registered twice in {module_name}")
        table[key] = factory
        hook = namespace.get("ssl_bench_backbones")
        if hook is None:

            def ssl_bench_backbones() -> dict[str, Callable[..., Any]]:
                return registered(module_name)

            setattr(ssl_bench_backbones, _MARK, True)
            namespace["ssl_bench_backbones"] = hookimpl(ssl_bench_backbones)
        elif not getattr(hook, _MARK, False):
            raise ValueError(
                f"{module_name} defines its own ssl_bench_backbones hook before @register_backbone; "
                "return registered(__name__) from it and define it after the decorated factories"
            )
        return factory

    return add(fn) if fn is not None else add
