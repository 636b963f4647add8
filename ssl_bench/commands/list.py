"""``ssl-bench list``: every discovered plugin (kind, name, plugin, source, version) and the shipped protocols;
``--options NAME``: a plugin's options and the recipes it ships."""

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
        for family, recipe in sorted((getattr(entry.factory, "recipes", None) or {}).items()):
            shipped = ", ".join(f"{k}={v!r}" for k, v in sorted(recipe.get("options", {}).items()))
            print(f"  recipe '{family}' sets: {shipped or 'no options'}")
    return 0
