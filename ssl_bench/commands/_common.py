"""What several commands share: argument types, the options of a run (``run`` and ``sweep``), output files.

Every command module has ``HELP`` (one line), ``add_arguments(parser)`` and ``main(args) -> int``; it
imports heavy libraries (torch, h5py) inside ``main``, so ``ssl-bench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from ssl_bench.errors import UserError


def key_value(text: str) -> tuple[str, object]:
    """Parse ``key=value``; the value is read as TOML (numbers, booleans, lists), else kept as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def recipe_arg(text: str) -> tuple[str, object] | str:
    """``--recipe``: a ``key=value`` pair, or the path of a TOML file of recipe keys."""
    return key_value(text) if "=" in text else text


def add_plugin(p: argparse.ArgumentParser, help: str = "also load this plugin (repeatable)") -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="NAME_OR_PATH", help=help)


def add_protocol(p: argparse.ArgumentParser, help: str = "shipped protocol name or .toml path (default: smoke)") -> None:
    p.add_argument("--protocol", default="smoke", help=help)


def add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder holding the protocol's dataset")
    p.add_argument("--download", action="store_true", help="download the dataset if it is missing")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: auto)")


def add_stream_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stream-opt",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="stream option, e.g. path=split.json for --stream manifest (repeatable)",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of one run, shared by ``run`` and ``sweep``."""
    add_plugin(p, "load a plugin: installed entry-point name, importable module, or .py file (repeatable)")
    add_protocol(p)
    p.add_argument("--out", default="runs", type=Path, help="folder for result files (default: runs)")
    p.add_argument(
        "--method-opt",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="method option, e.g. temperature=0.2 (repeatable)",
    )
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        type=recipe_arg,
        metavar="KEY=VALUE|FILE.toml",
        help="change the method's optimisation recipe: lr=0.3, optimizer=lars, options.temperature=0.2, "
        "or a TOML file of such keys (repeatable, later ones win; see README, Recipes)",
    )
    p.add_argument(
        "--strategy-opt",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="strategy option; with several strategies prefix the name: replay.size=500",
    )
    add_stream_opt(p)
    add_data(p)
    add_device(p)
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp32"],
        help="training precision: bf16 autocast or fp32; the loss is float32 either way (auto: bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the method's training step (off by default)")
    p.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="TRACKER",
        help="log loss, lr and per-phase metrics: tensorboard[=DIR] (default DIR: OUT/tensorboard) or wandb (repeatable)",
    )
    p.add_argument(
        "--save-backbone",
        action="store_true",
        help="also write the final backbone's weights next to the result file (RESULT.safetensors)",
    )


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed < 2**32:
        raise UserError(f"--seed must be an integer from 0 to {2**32 - 1}, got {seed}")


def run_config(args: argparse.Namespace, registry: Any, proto: Any, **chosen: Any) -> Any:
    """The :class:`~ssl_bench.config.RunConfig` of ``run``/``sweep``'s options: method, stream and strategy as
    chosen, else the ``--plugin``'s only one, else the protocol's default."""
    from ssl_bench import recipe
    from ssl_bench.plan import RunConfig

    def pick(kind: str) -> str:
        return chosen.get(kind) or registry.default_for(kind) or getattr(proto.defaults, kind)

    check_seed(chosen.get("seed"))
    return RunConfig(
        protocol=proto,
        method=pick("method"),
        stream=pick("stream"),
        strategy=pick("strategy"),
        seed=proto.seeds[0] if chosen.get("seed") is None else chosen["seed"],
        out=args.out,
        method_options=dict(args.method_opt),
        strategy_options=dict(args.strategy_opt),
        stream_options=dict(args.stream_opt),
        data_root=args.data_root,
        download=args.download,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        plugins=list(args.plugin),
        progress=not args.quiet,
        recipe_overrides=recipe.overrides(args.recipe),
        log=list(args.log),
        save_backbone=args.save_backbone,
    )


def write_output(path: Path, data: str | bytes) -> None:
    """Write a command's output file (creating its folder); an OS error is one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot write '{path}': {err.strerror or err}") from None


def print_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
