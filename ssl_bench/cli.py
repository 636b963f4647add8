"""The ``ssl-bench`` command line: run, list, show, leaderboard, report, submit, verify, ...

Bad input (a misspelt plugin, a broken protocol, an unwritable folder) ends with one line
on stderr saying what to fix, and exit status 2; ``--debug`` shows the traceback instead.
Output into a pipe that closes early (``ssl-bench show F | head``) ends quietly with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from pathlib import Path

import numpy as np

import ssl_bench
from ssl_bench import protocol as protocols
from ssl_bench.errors import UserError, did_you_mean

log = logging.getLogger("ssl_bench")


def _key_value(text: str) -> tuple[str, object]:
    """Parse ``key=value``; the value is read as TOML (numbers, booleans, lists), else kept as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def _recipe_arg(text: str) -> tuple[str, object] | str:
    """``--recipe``: a ``key=value`` pair, or the path of a TOML file of recipe keys."""
    return _key_value(text) if "=" in text else text


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars, warnings only")
    parser = argparse.ArgumentParser(
        prog="ssl-bench", description="Benchmark self-supervised pre-training on streaming data.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"ssl-bench {ssl_bench.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, parents=()) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common, *parents])

    shared = argparse.ArgumentParser(add_help=False)  # options of both run and sweep
    shared.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="NAME_OR_PATH",
        help="load a plugin: installed entry-point name, importable module, or .py file (repeatable)",
    )
    shared.add_argument("--protocol", default="smoke", help="shipped protocol name or .toml path (default: smoke)")
    shared.add_argument("--out", default="runs", type=Path, help="folder for result files (default: runs)")
    shared.add_argument(
        "--method-opt",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="method option, e.g. temperature=0.2 (repeatable)",
    )
    shared.add_argument(
        "--recipe",
        action="append",
        default=[],
        type=_recipe_arg,
        metavar="KEY=VALUE|FILE.toml",
        help="change the method's optimisation recipe: lr=0.3, optimizer=lars, options.temperature=0.2, "
        "or a TOML file of such keys (repeatable, later ones win; see README, Recipes)",
    )
    shared.add_argument(
        "--strategy-opt",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="strategy option; with several strategies prefix the name: replay.size=500",
    )
    shared.add_argument("--data-root", help="folder holding the protocol's dataset")
    shared.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    shared.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: auto)")
    shared.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp32"],
        help="training precision: bf16 autocast or fp32; the loss is float32 either way (auto: bf16 on CUDA, fp32 on CPU)",
    )
    shared.add_argument("--compile", action="store_true", help="torch.compile the method's training step (off by default)")
    shared.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="TRACKER",
        help="log loss, lr and per-phase metrics: tensorboard[=DIR] (default DIR: OUT/tensorboard) or wandb (repeatable)",
    )
    shared.add_argument(
        "--save-backbone",
        action="store_true",
        help="also write the final backbone's weights next to the result file (RESULT.safetensors)",
    )

    run = command("run", help="train and evaluate one run under a protocol, write a result file", parents=[shared])
    run.add_argument("--method", help="method name (default: the --plugin's only method, else the protocol's default)")
    run.add_argument("--stream", help="stream name (default: the protocol's default)")
    run.add_argument("--strategy", help="strategy name, or several joined by '+' (default: the protocol's default)")
    run.add_argument("--seed", type=int, help="seed (default: the protocol's first seed)")
    run.add_argument("--restart", action="store_true", help="ignore a checkpoint left by an interrupted run")
    run.add_argument(
        "--wait", action="store_true", help="when another process runs this configuration on --out, wait for it (default: exit 2)"
    )
    stream_opt = dict(
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="stream option, e.g. path=split.json for --stream manifest (repeatable)",
    )
    run.add_argument("--stream-opt", **stream_opt)

    export = command("stream-export", help="write a stream's split as a manifest file (reload it with --stream manifest)")
    export.add_argument("-o", "--output", required=True, type=Path, help="manifest file to write (.json or .toml)")
    export.add_argument("--stream", help="stream name (default: the protocol's default)")
    export.add_argument("--seed", type=int, help="seed (default: the protocol's first seed)")
    export.add_argument("--stream-opt", **stream_opt)
    export.add_argument("--plugin", action="append", default=[], metavar="NAME_OR_PATH", help="also load this plugin")
    export.add_argument("--protocol", default="smoke", help="shipped protocol name or .toml path (default: smoke)")
    export.add_argument("--data-root", help="folder holding the protocol's dataset")
    export.add_argument("--download", action="store_true", help="download the dataset if it is missing")

    sweep = command("sweep", help="run every combination of methods, streams, strategies and seeds", parents=[shared])
    sweep.add_argument("--methods", help="comma-separated method names (default: as for run)")
    sweep.add_argument("--streams", help="comma-separated stream names (default: the protocol's default)")
    sweep.add_argument("--strategies", help="comma-separated strategies, each possibly 'a+b' (default: the protocol's default)")
    sweep.add_argument(
        "--grid",
        type=Path,
        metavar="FILE.toml",
        help="run the union of the products listed as [[grid]] tables (methods, streams, strategies; optionally a "
        "protocol other than --protocol) instead",
    )
    sweep.add_argument("--dry-run", action="store_true", help="list the runs that have no result file yet; run nothing")
    sweep.add_argument("--seeds", default="all", help="'all' (the protocol's seeds, default) or e.g. 0,1,2")
    sweep.add_argument("--jobs", type=int, default=1, help="runs at the same time (default: 1)")
    sweep.add_argument(
        "--per-gpu",
        type=int,
        metavar="K",
        help="local launcher: K runs at the same time on every visible GPU, each pinned to its GPU (CUDA_VISIBLE_DEVICES); "
        "replaces --jobs",
    )
    sweep.add_argument(
        "--launcher",
        default="local",
        choices=["local", "slurm", "submitit-local"],
        help="local process pool (default), or submitit: SLURM or its local executor",
    )
    sweep.add_argument(
        "--slurm",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="submitit parameter for the slurm launcher, e.g. slurm_partition=gpu, gpus_per_node=1",
    )

    ev = command("eval", help="run a protocol's evaluators on saved backbone weights (--save-backbone, or a state_dict)")
    ev.add_argument("weights", type=Path, metavar="WEIGHTS", help=".safetensors, or a torch.save'd state_dict (.pt/.pth)")
    ev.add_argument("--protocol", default="smoke", help="shipped protocol name or .toml path (default: smoke)")
    ev.add_argument("--stream", help="stream name (default: the protocol's default)")
    ev.add_argument(
        "--seed", type=int, help="seed of the stream and probes (default: the weights' run's, else the protocol's first)"
    )
    ev.add_argument("--plugin", action="append", default=[], metavar="NAME_OR_PATH", help="also load this plugin")
    ev.add_argument("--data-root", help="folder holding the protocol's dataset")
    ev.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")
    ev.add_argument("-o", "--output", type=Path, help="also write every measured value as JSON to this file")

    exp = command("export", help="every number of a folder of result files as one long table (csv, json, parquet)")
    exp.add_argument("results", type=Path, metavar="RESULTS_DIR", help="folder searched for .h5 files (recursively)")
    exp.add_argument("--format", choices=["csv", "json", "parquet"], help="default: from -o's suffix, else csv")
    exp.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout (required for parquet)")

    lst = command("list", help="list discovered plugins and what they provide, and the shipped protocols")
    lst.add_argument("--plugin", action="append", default=[], metavar="NAME_OR_PATH", help="also load this plugin")
    lst.add_argument("--options", metavar="NAME", help="the options of the plugin(s) registered as NAME: type and default")

    show = command("show", help="print a readable summary of a result file")
    show.add_argument("result", type=Path)

    plot = command("plot", help="PNG figures (accuracy matrix, curves, spectra, CKA) of one or several result files")
    plot.add_argument("results", nargs="+", type=Path, metavar="RESULT.h5")
    plot.add_argument("--out", default="plots", type=Path, help="folder for the PNG files (default: plots)")

    board = command("leaderboard", help="leaderboard tables from result files, one per protocol hash")
    board.add_argument(
        "--results",
        default=Path("leaderboard") / "results",
        type=Path,
        help="folder searched for .h5 files (default: leaderboard/results)",
    )
    board.add_argument(
        "--format",
        choices=["md", "html", "csv", "json"],
        help="md (default), html (one self-contained page), csv or json; default: from -o's suffix",
    )
    board.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    board.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a file was skipped as bad (what CI runs); without it, bad files are only warned about",
    )

    rep = command("report", help="findings report: the papers' claims checked against result files (markdown + PNGs)")
    rep.add_argument("results", type=Path, metavar="RESULTS_DIR", help="folder searched for .h5 files (recursively)")
    rep.add_argument("-o", "--output", type=Path, help="write the markdown here instead of stdout")
    rep.add_argument("--figures", type=Path, metavar="DIR", help="also draw the figures as PNG files into DIR")

    check = command("check", help="a contributor's pre-flight: load, validate and run every thing a plugin provides")
    check.add_argument("--plugin", required=True, metavar="NAME_OR_PATH", help="the plugin to check")
    check.add_argument("--protocol", default="smoke", help="protocol to run under (default: smoke)")
    check.add_argument(
        "--report",
        default=Path("ssl-bench-check.md"),
        type=Path,
        help="markdown block for the pull request (default: ssl-bench-check.md)",
    )
    check.add_argument("--out", type=Path, help="keep the check runs' result files here (default: a temporary folder)")
    check.add_argument("--data-root", help="folder holding the protocol's dataset")
    check.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    check.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")

    submit = command("submit", help="validate result files and copy them into the leaderboard")
    submit.add_argument("results", nargs="+", type=Path, metavar="RESULT.h5")
    submit.add_argument(
        "--to",
        default=Path("leaderboard") / "results",
        type=Path,
        help="leaderboard results folder (default: leaderboard/results)",
    )
    submit.add_argument("--check", action="store_true", help="validate only, copy nothing (what CI runs)")
    submit.add_argument("--replace", action="store_true", help="overwrite a different file already submitted for the same run")

    verify = command("verify", help="re-run a result file's seed on the CPU from its stored configuration and compare")
    verify.add_argument("results", nargs="+", type=Path, metavar="RESULT.h5")
    verify.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="NAME_OR_PATH",
        help="load these plugins instead of the --plugin paths stored in the file (repeatable)",
    )
    verify.add_argument(
        "--any-protocol", action="store_true", help="re-run even a protocol that is not CPU-sized (may take hours)"
    )
    verify.add_argument(
        "--skip-non-cpu",
        action="store_true",
        help="skip files under protocols that are not CPU-sized, with a note, instead of failing (what CI runs)",
    )
    verify.add_argument("--keep", type=Path, metavar="DIR", help="keep the re-run's result file in DIR")
    return parser


def _config(args, registry, proto, **chosen):
    """A RunConfig from the shared options, with method/stream/strategy defaults filled in and its recipe resolved."""
    from ssl_bench import recipe
    from ssl_bench.engine import RunConfig, resolve_recipe

    def pick(kind: str) -> str:
        return chosen.get(kind) or registry.default_for(kind) or getattr(proto.defaults, kind)

    _check_seed(chosen.get("seed"))

    config = RunConfig(
        protocol=proto,
        method=pick("method"),
        stream=pick("stream"),
        strategy=pick("strategy"),
        seed=proto.seeds[0] if chosen.get("seed") is None else chosen["seed"],
        out=args.out,
        method_options=dict(args.method_opt),
        strategy_options=dict(args.strategy_opt),
        stream_options=dict(getattr(args, "stream_opt", [])),
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
    _validate(registry, [config.method], [config.stream], [config.strategy])
    return resolve_recipe(config, registry)


def _check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed < 2**32:
        raise UserError(f"--seed must be an integer from 0 to {2**32 - 1}, got {seed}")


def _validate(registry, methods, streams, strategies) -> None:
    """Unknown names fail here, before any data is loaded."""
    for strategy in strategies:
        for part in strategy.split("+"):
            registry.get("strategy", part)
    for method in methods:
        registry.get("method", method)
    for stream in streams:
        registry.get("stream", stream)


def cmd_run(args) -> int:
    from ssl_bench.engine import execute
    from ssl_bench.registry import Registry
    from ssl_bench.sweep import cores

    if "OMP_NUM_THREADS" not in os.environ:  # the cores this process may use (taskset, cgroups), not the machine's
        import torch

        torch.set_num_threads(cores())

    proto = protocols.load(args.protocol)
    registry = Registry.discover(args.plugin)
    config = _config(args, registry, proto, method=args.method, stream=args.stream, strategy=args.strategy, seed=args.seed)
    path = execute(config, registry, resume=not args.restart, wait=args.wait)
    if path is not None:  # None on the other ranks under torchrun
        print(path)
    return 0


def cmd_sweep(args) -> int:
    from ssl_bench import sweep
    from ssl_bench.engine import check_writable
    from ssl_bench.options import check_run
    from ssl_bench.registry import Registry

    proto = protocols.load(args.protocol)
    registry = Registry.discover(args.plugin)
    split = lambda text: [x for x in (text or "").split(",") if x]  # noqa: E731
    base = _config(args, registry, proto)
    if args.grid and (args.methods or args.streams or args.strategies):
        raise UserError("--grid lists the methods, streams and strategies itself: drop --methods, --streams and --strategies")
    if args.grid:
        cells = sweep.grid(args.grid)
    else:
        methods, streams = split(args.methods) or [base.method], split(args.streams) or [base.stream]
        cells = [(methods, streams, split(args.strategies) or [base.strategy], None)]
    for methods, streams, strategies, _ in cells:
        _validate(registry, methods, streams, strategies)
    configs = sweep.expand(base, registry, cells, sweep.seeds_from(args.seeds, proto))
    for c in configs:  # every option of every run, before any run starts
        check_run(c, registry)
    if args.dry_run:
        todo = [c for c in configs if not c.result_path.exists()]
        for c in todo:
            print(f"{sweep.describe(c)}  {c.result_path}")
        print(f"{len(todo)} of {len(configs)} runs to do ({len(configs) - len(todo)} have result files)")
        return 0
    sweep.check_streams([c for c in configs if not c.result_path.exists()], registry)
    check_writable(args.out)
    paths, failures = sweep.run(
        configs, jobs=max(1, args.jobs), launcher=args.launcher, slurm=dict(args.slurm), per_gpu=args.per_gpu
    )
    for path in paths:
        print(path)
    for failure in failures:
        print(f"ssl-bench: failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def cmd_eval(args) -> int:
    import json

    from ssl_bench import weights

    _check_seed(args.seed)
    metrics, meta = weights.evaluate(
        args.weights,
        args.protocol,
        stream=args.stream,
        seed=args.seed,
        data_root=args.data_root,
        download=args.download,
        device=args.device,
        plugins=args.plugin,
        progress=not args.quiet,
    )
    made = f"{meta['method']} / {meta['stream']} / {meta['strategy']}, seed {meta['seed']}" if "method" in meta else "no metadata"
    print(f"{args.weights} ({made}) under protocol {args.protocol}")
    numbers = {}
    for key, value in metrics.items():
        array = np.asarray(value)
        if array.dtype.kind not in "fiub" or array.ndim > 1:  # CKA features: not numbers to read
            continue
        numbers[key] = array.tolist()
        if array.size <= 64:  # a spectrum goes to -o only
            cells = "".join(f"{float(v):8.3f}" for v in np.atleast_1d(array))
            mean = f"   mean {float(array.mean()):.4f}" if array.ndim == 1 else ""
            print(f"  {key:<28}{cells}{mean}")
    if args.output is not None:
        doc = {"weights": str(args.weights), "protocol": args.protocol, "metadata": meta, "metrics": numbers}
        try:
            args.output.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        except OSError as err:
            raise UserError(f"cannot write '{args.output}': {err.strerror or err}") from None
    return 0


def cmd_export(args) -> int:
    from ssl_bench import export, leaderboard

    fmt = export.format_for(args.output, args.format)
    if fmt == "parquet" and args.output is None:
        raise UserError("--format parquet writes a binary file: give -o FILE.parquet")
    data = export.render(export.rows(leaderboard.collect(args.results)), fmt)
    if args.output is None:
        print(data, end="")
        return 0
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            args.output.write_bytes(data)
        else:
            args.output.write_text(data, encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot write '{args.output}': {err.strerror or err}") from None
    log.info("wrote %s (%s)", args.output, fmt)
    return 0


def cmd_stream_export(args) -> int:
    from ssl_bench import manifest, options
    from ssl_bench.engine import RunConfig, load_data
    from ssl_bench.registry import Registry

    proto = protocols.load(args.protocol)
    registry = Registry.discover(args.plugin)
    stream = args.stream or registry.default_for("stream") or proto.defaults.stream
    _check_seed(args.seed)
    seed = proto.seeds[0] if args.seed is None else args.seed
    stream_opts = {**proto.stream.options.get(stream, {}), **dict(args.stream_opt)}
    options.check(registry.get("stream", stream), stream_opts, f"protocol [stream.options.{stream}] or --stream-opt")
    options.check(registry.get("dataset", proto.dataset.name), proto.dataset.options, "protocol [dataset] options")
    config = RunConfig(
        protocol=proto,
        method=proto.defaults.method,
        stream=stream,
        strategy=proto.defaults.strategy,
        seed=seed,
        out=Path("."),
        stream_options=dict(args.stream_opt),
        data_root=args.data_root,
        download=args.download,
        plugins=list(args.plugin),
        progress=not args.quiet,
    )
    dataset, experiences = load_data(config, registry)
    source = {"stream": stream, "seed": seed, "protocol": proto.label, "protocol_hash": proto.hash}
    print(manifest.write(args.output, manifest.describe(dataset, experiences, source)))
    return 0


def cmd_list(args) -> int:
    from ssl_bench.registry import KINDS, Registry

    registry = Registry.discover(args.plugin)
    if args.options:
        return _list_options(registry, args.options)
    rows = [
        (kind, name, e.plugin.name, e.plugin.source, e.plugin.version)
        for kind in KINDS
        for name, e in sorted(registry.entries[kind].items())
    ]
    _table(("kind", "name", "plugin", "source", "version"), rows)
    broken = [p for p in registry.plugins.values() if p.error]
    if broken:
        print("\nbroken plugins (skipped):")
        for p in broken:
            print(f"  {p.name} ({p.source}): {p.error}")
    print("\nprotocols: " + ", ".join(protocols.shipped()))
    return 0


def _list_options(registry, name: str) -> int:
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
            _table(("  option", "type", "default"), [("  " + r[0], *r[1:]) for r in rows])
        else:
            print("  no options")
        if described.open:
            print("  also takes other options (**kwargs), not checked")
        for family, recipe in sorted((getattr(entry.factory, "recipes", None) or {}).items()):
            shipped = ", ".join(f"{k}={v!r}" for k, v in sorted(recipe.get("options", {}).items()))
            print(f"  recipe '{family}' sets: {shipped or 'no options'}")
    return 0


def cmd_show(args) -> int:
    from ssl_bench import continual, results

    r = results.Result(args.result)
    r.require(results.IDENTITY + ("ssl_bench_version", "torch_version", "device"), ["metrics/acc_matrix"])
    acc = r.acc_matrix
    if acc.ndim != 2 or acc.dtype.kind not in "fiu":
        raise UserError(
            f"{r.where}: metrics/acc_matrix must be a numeric [phases, experiences] matrix, got {acc.dtype} {acc.shape}"
        )
    init = r.get("metrics/acc_init")
    try:
        results.check(r)
        problem = None
    except UserError as err:
        problem = str(err)
    try:
        summary = r.summary
    except UserError:
        summary = {}
    # everything is read and checked; now print
    a = {k: str(v) for k, v in r.attrs.items()}
    lines = [
        f"{args.result}",
        f"  protocol   {a['protocol']} v{a['protocol_version']} ({a['protocol_hash'][:12]})",
        f"  run        method={a['method']} stream={a['stream']} strategy={a['strategy']} seed={a['seed']}",
        f"  made with  ssl-bench {a['ssl_bench_version']}, torch {a['torch_version']}, {a['device']}, "
        f"commit {a.get('git_commit') or 'unknown'}, {a.get('seconds', '?')} s, {a.get('steps', '?')} steps",
    ]
    for key, value in sorted(summary.items()):
        lines.append(f"  {key:<24} {value:.4f}   {continual.DEFINITIONS.get(key, '')}".rstrip())
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.atleast_1d(r.get("phases/names", []))]
    lines.append("\n  accuracy matrix (row: after phase, column: evaluated on experience)")
    lines.append("  " + " " * 22 + "".join(f"{'exp ' + str(j):>8}" for j in range(acc.shape[1])))
    if init is not None and np.shape(init) == (acc.shape[1],) and np.asarray(init).dtype.kind in "fiu":
        lines.append("  " + f"{'init':<22}" + "".join(f"{v:8.3f}" for v in init))
    for i, row in enumerate(acc):
        label = names[i] if i < len(names) else str(i)
        lines.append("  " + f"{label[:22]:<22}" + "".join(f"{v:8.3f}" for v in row))
    others = sorted(
        k for k in r.shapes if k.startswith(("metrics/", "end/")) and k not in ("metrics/acc_matrix", "metrics/acc_init")
    )
    numeric = lambda k: np.asarray(r[k]).dtype.kind in "fiub"  # noqa: E731 - reads only the small datasets asked for
    series = [k for k in others if k.startswith("metrics/") and r.shapes[k] == (len(acc),) and numeric(k)]
    if series:  # one number per phase (collapse AUC, CKA to the previous phase, few-shot accuracy, ...)
        lines.append("\n  per-phase metrics (column: after phase)")
        lines.append("  " + " " * 30 + "".join(f"{'init':>10}" + "".join(f"{'phase ' + str(i):>10}" for i in range(len(acc)))))
        for k in series:
            init_key = "init/" + k.split("/", 1)[1]
            cells = f"{float(r[init_key]):10.4f}" if r.shapes.get(init_key) == () and numeric(init_key) else f"{'':>10}"
            lines.append("  " + f"{k.split('/', 1)[1][:30]:<30}" + cells + "".join(f"{float(v):10.4f}" for v in r[k]))
    for k in [k for k in others if k.startswith("end/") and r.shapes[k] == () and numeric(k)]:
        lines.append(f"  {k:<40} {float(r[k]):.4f}")
    if others:
        lines.append("\n  stored metrics: " + ", ".join(f"{k} {r.shapes[k]}" for k in others))
    if problem:
        log.warning("this file would be refused by submit and skipped by the leaderboard: %s", problem)
    print("\n".join(lines))
    return 0


def cmd_plot(args) -> int:
    from ssl_bench import plot

    for path in plot.plot(args.results, args.out):
        print(path)
    return 0


def cmd_leaderboard(args) -> int:
    from ssl_bench import leaderboard

    fmt = leaderboard.format_for(args.output, args.format)
    skipped: list = []
    text = leaderboard.render(leaderboard.build(leaderboard.collect(args.results, skipped)), fmt)
    if args.output is None:
        print(text, end="")
    else:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text, encoding="utf-8")
        except OSError as err:
            raise UserError(f"cannot write '{args.output}': {err.strerror or err}") from None
        log.info("wrote %s (%s)", args.output, fmt)
    if skipped and args.strict:
        print(f"ssl-bench: error: {len(skipped)} bad result file(s) skipped (named above); fix or remove them", file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from ssl_bench import report

    text = report.report(args.results, args.output, args.figures)
    if args.output is None:
        print(text, end="")
    else:
        log.info("wrote %s", args.output)
    return 0


def cmd_check(args) -> int:
    from ssl_bench import check

    report = check.run_checks(
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


def cmd_submit(args) -> int:
    from ssl_bench import submit

    accepted = submit.submit(args.results, to=args.to, check_only=args.check, replace=args.replace)
    verb = "valid" if args.check else "submitted"
    for item in accepted:
        d = submit.describe(item)
        print(
            f"{verb}: {d['file']}  ({d['method']} / {d['stream']} / {d['strategy']}, seed {d['seed']}, "
            f"final acc {100 * d['final_avg_acc']:.1f}%)"
        )
    if not args.check:
        print(
            f"next: ssl-bench leaderboard --results {args.to} -o {args.to.parent / 'README.md'} "
            f"and --format html -o {args.to.parent / 'index.html'}, then open a pull request"
        )
    return 0


def cmd_verify(args) -> int:
    from ssl_bench import verify

    failed = 0
    for path in args.results:
        outcome = verify.verify(
            path,
            plugins=args.plugin,
            any_protocol=args.any_protocol,
            skip_other=args.skip_non_cpu,
            keep=args.keep,
            progress=not args.quiet,
        )
        if outcome.skipped:
            print(f"skipped: {path}: {outcome.skipped}")
        elif outcome.ok:
            worst = max(outcome.differences.values(), default=0.0)
            print(
                f"reproduced: {path} (largest |difference| {worst:.3f}; tolerances {verify.CELL_TOLERANCE} per accuracy, "
                f"{verify.SUMMARY_TOLERANCE} per summary number)"
            )
        else:
            failed += 1
            print(f"ssl-bench: error: '{path}' does not reproduce: {'; '.join(outcome.failures)}", file=sys.stderr)
    return 1 if failed else 0


def _table(header, rows) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


COMMANDS = {
    "run": cmd_run,
    "sweep": cmd_sweep,
    "list": cmd_list,
    "show": cmd_show,
    "plot": cmd_plot,
    "leaderboard": cmd_leaderboard,
    "report": cmd_report,
    "stream-export": cmd_stream_export,
    "eval": cmd_eval,
    "export": cmd_export,
    "check": cmd_check,
    "submit": cmd_submit,
    "verify": cmd_verify,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug, args.quiet = getattr(args, "debug", False), getattr(args, "quiet", False)  # flags go before or after COMMAND
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="ssl-bench: %(message)s", stream=sys.stderr)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            code = COMMANDS[args.command](args)
            sys.stdout.flush()  # here, so that a closed pipe is seen below and not at exit
            return code
    except BrokenPipeError:
        # the reader went away (ssl-bench show F | head): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as err:
        if args.debug:
            raise
        print(f"ssl-bench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssl-bench: interrupted; run the same command again to resume from the last finished phase", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - turned into one line unless --debug
        if args.debug:
            raise
        from ssl_bench.registry import plugin_of_exception

        where = plugin_of_exception(err)
        origin = f" in {where}" if where else ""
        print(f"ssl-bench: error{origin}: {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
