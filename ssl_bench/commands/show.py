"""``ssl-bench show``: a readable summary of one result file (checked as the leaderboard checks it)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ssl_bench.errors import UserError

HELP = "print a readable summary of a result file"
log = logging.getLogger("ssl_bench")


def terminal_text(text: object) -> str:
    """Text from a result file, safe on a terminal: every character that is not printable (escape sequences,
    carriage returns, line breaks, bidirectional overrides) shown as its Python escape, e.g. ``\\x1b``."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def cost_lines(r, cost: dict) -> list[str]:
    """What the run cost (:func:`ssl_bench.results.continual.cost_summary`): totals, then one row per phase."""
    if cost["train_minutes"] is None:
        total = f"{cost['total_minutes']:.1f} min" if cost["total_minutes"] is not None else "unknown"
        return [f"  cost       {total} in all; per-phase costs not recorded (written before runs kept them)"]
    parts = ", ".join(f"{name} {minutes:.2f}" for name, minutes in cost["eval_minutes_by"].items())
    flops = f", {cost['train_flops']:.3g} FLOPs" if cost["train_flops"] else ""
    memory = f"{cost['peak_memory_bytes'] / 2**20:.0f} MiB" if cost["peak_memory_bytes"] else "?"
    lines = [
        f"  cost       {cost['total_minutes']:.2f} min in all: training {cost['train_minutes']:.2f} min "
        f"({cost['images_per_second'] or 0:.0f} images/s{flops}), evaluation {cost['eval_minutes']:.2f} min ({parts}); "
        f"peak memory {memory}",
        "  " + " " * 22 + "".join(f"{h:>12}" for h in ("train s", "CPU s", "images/s", "GFLOP/step", "peak MiB", "eval s")),
    ]
    keys = ("cost/train_seconds", "cost/train_cpu_seconds", "cost/images_per_second")
    per_phase = [np.asarray(r[k], dtype=float) for k in keys]
    step = np.asarray(r["cost/step_flops"], dtype=float)
    peak = np.asarray(r["cost/peak_memory_bytes"], dtype=float)
    evals = [np.asarray(r[k], dtype=float) for k in r.shapes if k.startswith("cost/eval_seconds/")]
    for i in range(len(per_phase[0])):
        gflop = "/".join(f"{v / 1e9:.2f}" for v in step[i] if np.isfinite(v)) if step.ndim == 2 else ""
        eval_s = sum(float(e[i + 1]) for e in evals if e.shape[0] > i + 1 and np.isfinite(e[i + 1]))
        cells = [f"{v[i]:12.1f}" for v in per_phase] + [f"{gflop:>12}", f"{peak[i] / 2**20:12.0f}", f"{eval_s:12.1f}"]
        lines.append("  " + f"{'phase ' + str(i):<22}" + "".join(cells))
    return lines


def run_lines(r) -> list[str]:
    """How the run was made and how it trained: its recipe (and where it came from), the versions of the plugins
    its names come from, and its loss curve in numbers (first, last, and per phase the mean of its last tenth)."""
    import json

    lines = []
    try:
        recipe = json.loads(r["recipe"]) if "recipe" in r.shapes else None
    except (UserError, ValueError, TypeError):
        recipe = None
    if isinstance(recipe, dict):
        keys = ("optimizer", "lr", "lr_scaling", "weight_decay", "schedule", "warmup_epochs")
        text = ", ".join(f"{k}={recipe[k]}" for k in keys if k in recipe)
        options = recipe.get("options") if isinstance(recipe.get("options"), dict) else {}
        text += "; options " + (", ".join(f"{k}={v!r}" for k, v in sorted(options.items())) or "none")
        source = r.attrs.get("recipe_source")
        lines.append(f"  recipe     {text}" + (f" (from {source})" if source else ""))
    raw = r.attrs.get("plugins")
    try:
        plugins = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    except (ValueError, TypeError):
        plugins = {}
    if isinstance(plugins, dict) and plugins:
        a = r.attrs
        named = [str(a.get("method")), str(a.get("stream")), *str(a.get("strategy")).split("+"), str(a.get("dataset"))]
        own = [f"{n} {plugins[n]}" for n in dict.fromkeys(named) if n in plugins]
        others = len(plugins) - len(own)
        lines.append(f"  plugins    {', '.join(own) or 'none by the run names'} (and {others} other plugins loaded)")
    try:
        loss = np.asarray(r.get("train/loss", []), dtype=float).reshape(-1) if "train/loss" in r.shapes else np.array([])
        steps = np.asarray(r.get("phases/steps", [loss.size]), dtype=int).reshape(-1)
    except (UserError, ValueError, TypeError):  # a damaged file: the rest of show still prints
        loss, steps = np.array([]), np.array([], dtype=int)
    if loss.size:
        ends = np.cumsum(steps)
        tails = []
        for i, end in enumerate(ends):
            if end <= loss.size and steps[i] > 0:
                tail = loss[end - max(1, steps[i] // 10) : end]
                tails.append(f"{np.mean(tail):.3f}")
        lines.append(
            f"  loss       {loss[0]:.3f} at the first step, {loss[-1]:.3f} at the last ({loss.size} steps); "
            f"at the end of each phase (mean of its last tenth): {', '.join(tails)}"
        )
    return lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("result", type=Path)


def main(args: argparse.Namespace) -> int:
    from ssl_bench import results
    from ssl_bench.results import continual

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
    lines += run_lines(r)
    lines += cost_lines(r, continual.cost_summary(r))
    for key, value in sorted(summary.items()):
        lines.append(f"  {key:<24} {value:.4f}   {continual.DEFINITIONS.get(key, '')}".rstrip())
    names = [
        n.decode(errors="backslashreplace") if isinstance(n, bytes) else str(n) for n in np.atleast_1d(r.get("phases/names", []))
    ]
    lines += ["", "  accuracy matrix (row: after phase, column: evaluated on experience)"]
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
        lines += ["", "  per-phase metrics (column: after phase)"]
        lines.append("  " + " " * 30 + "".join(f"{'init':>10}" + "".join(f"{'phase ' + str(i):>10}" for i in range(len(acc)))))
        for k in series:
            init_key = "init/" + k.split("/", 1)[1]
            cells = f"{float(r[init_key]):10.4f}" if r.shapes.get(init_key) == () and numeric(init_key) else f"{'':>10}"
            lines.append("  " + f"{k.split('/', 1)[1][:30]:<30}" + cells + "".join(f"{float(v):10.4f}" for v in r[k]))
    for k in [k for k in others if k.startswith("end/") and r.shapes[k] == () and numeric(k)]:
        lines.append(f"  {k:<40} {float(r[k]):.4f}")
    if others:
        lines += ["", "  stored metrics: " + ", ".join(f"{k} {r.shapes[k]}" for k in others)]
    if problem:
        log.warning("this file would be refused by submit and skipped by the leaderboard: %s", terminal_text(problem))
    print("\n".join(map(terminal_text, lines)))  # every line escaped: add lines, never line breaks inside one
    return 0
