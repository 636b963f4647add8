"""``ssl-bench list``: every discovered plugin (kind, name, plugin, source, version) and the shipped protocols;
``--options NAME``: a plugin's options and the recipes it ships (optimiser, learning rate, schedule, options)."""

from __future__ import annotations

import argparse

from ssl_bench.commands import _common
from ssl_bench.errors import UserError, did_you_mean

HELP = "list discovered plugins and what they provide, and the shipped protocols"


def add_arguments(p: argparse.ArgumentParser) -> None:
    _common.add_plugin(p)
    p.add_argument("--options", metavar="NAME", help="the options of the plugin(s) registered as NAME: type and default")


def main(args: argparse.Namespace) -> int:
    from ssl_bench import protocol
    from ssl_bench.registry import KINDS, Registry

    registry = Registry.discover(args.plugin)
    if args.options:
        return list_options(registry, args.options)
    rows = [
        (kind, name, e.plugin.name, e.plugin.source, e.plugin.version)
        for kind in KINDS
        for name, e in sorted(registry.entries[kind].items())
    ]
    _common.print_table(("kind", "name", "plugin", "source", "version"), rows)
    broken = [p for p in registry.plugins.values() if p.error]
    if broken:
        print("\nbroken plugins (skipped):")
        for p in broken:
            print(f"  {p.name} ({p.source}): {p.error}")
    print("\nprotocols: " + ", ".join(protocol.shipped()))
    return 0


def list_options(registry, name: str) -> int:
    from ssl_bench import options
    from ssl_bench.registry import KINDS

    found = [registry.entries[kind][name] for kind in KINDS if name in registry.entries[kind]]
    if not found:
        every = {n for kind in KINDS for n in registry.entries[kind]}
        raise UserError(f"no plugin provides '{name}'." + did_you_mean(name, every))
    for i, entry in enumerate(found):
        print(("\n" if i else "") + f"{entry.kind} {entry.name} (plugin {entry.plugin.name}, {entry.plugin.source})")
        described = options.options_of(entry)
        if described is None:
            print("  (its signature cannot be read)")
            continue
        rows = [
            (o.name, o.type_name, "(required)" if o.default is options.EMPTY else repr(o.default))
            for o in described.options.values()
        ]
        if rows:
            _common.print_table(("  option", "type", "default"), [("  " + r[0], *r[1:]) for r in rows])
        else:
            print("  no options")
        if described.open:
            print("  also takes other options (**kwargs), not checked")
        for family in sorted(getattr(entry.factory, "recipes", None) or {}):
            print(f"  recipe '{family}': {describe_recipe(entry.factory, family)}")
    return 0


def describe_recipe(factory, family: str) -> str:
    """One line: how the method is optimised under the protocol family ``family`` (its shipped recipe, ``extends``
    resolved, the defaults filled in) and the options the recipe sets."""
    from ssl_bench import recipe as recipes

    r = recipes.validate(recipes.shipped(factory, family) or {}, f"recipe '{family}'")
    scaled = {"linear": " x batch/256", "sqrt": " x sqrt(batch/256)", "none": ""}[r.lr_scaling]
    parts = [f"{r.optimizer} lr {r.lr:g}{scaled}", f"weight decay {r.weight_decay:g}", f"{r.schedule} schedule"]
    if r.warmup_epochs:
        parts.append(f"warm-up {r.warmup_epochs:g} epochs")
    if r.optimizer == "lars":
        parts.append(f"LARS eta {r.lars_eta:g}{', clipped' if r.lars_clip else ''}")
    options = ", ".join(f"{k}={v!r}" for k, v in sorted(r.options.items()))
    return "; ".join(parts) + f"; sets {options or 'no options'}"
