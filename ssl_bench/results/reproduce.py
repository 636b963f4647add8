"""``ssl-bench verify``: re-run a result file's seed from its stored configuration and compare.

``submit`` and the leaderboard check that a file was not edited after its run; they cannot
tell a consistent forgery (made-up arrays, summarised and hashed the way ssl-bench does) from
a real run. Re-running can: ``verify`` reads the file's stored protocol and configuration
(method, stream, strategy, seed, options), trains and evaluates that one run again on the CPU,
and compares the new accuracy matrix and summary with the file's.

Only protocols listed in :data:`CPU_SIZED` are re-run (a seed takes minutes on two CPU
cores); ``--any-protocol`` re-runs others, which may take hours.

Tolerance. On the same kind of machine, with the same thread count and the same versions, a
re-run is bit-identical to the file (measured: the shipped smoke-v1 simclr/instance/sequential
seed-0 file re-run with 2 threads, difference 0.000 everywhere). Across machines it is not:
the number of intra-op threads changes the order of floating-point reductions, and so do other
torch/BLAS versions and CPU kinds; the differences grow through training and flip some
held-out predictions. Measured on that same run with 1 instead of 2 threads: at most 0.044 in
one accuracy (7 of 160 held-out images) and 0.019 in one summary number (``forgetting_max``;
``final_avg_acc`` 0.003). A re-run agrees when every accuracy (accuracy matrix and random-init
row) differs by at most :data:`CELL_TOLERANCE` and every summary number by at most
:data:`SUMMARY_TOLERANCE` (absolute, fractions of 1), about twice what was measured. Versions
and CPUs other than the ones measured may differ more. When the file records the thread count
it ran with (attribute ``threads``), the re-run uses it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssl_bench import protocol as protocols
from ssl_bench import results
from ssl_bench.errors import UserError

log = logging.getLogger(__name__)

#: shipped protocols whose one seed runs in minutes on a 2-core CPU (smoke: about a minute)
CPU_SIZED = ("smoke", "forgetting")
#: largest allowed |difference| of one accuracy (acc_matrix, acc_init) between the file and the re-run
CELL_TOLERANCE = 0.10
#: largest allowed |difference| of one summary number (means over cells, so they vary less)
SUMMARY_TOLERANCE = 0.05


@dataclass
class Outcome:
    path: Path
    skipped: str | None = None  #: why the file was not re-run
    differences: dict[str, float] = field(default_factory=dict)  #: what -> |stored - re-run|
    failures: list[str] = field(default_factory=list)  #: what differs beyond the tolerance

    @property
    def ok(self) -> bool:
        return not self.failures


def cpu_sized(proto: protocols.Protocol) -> bool:
    """A shipped protocol of :data:`CPU_SIZED`, unchanged (same hash as the shipped file)."""
    return proto.name in CPU_SIZED and proto.name in protocols.shipped() and protocols.load(proto.name).hash == proto.hash


def verify(
    path: str | Path,
    plugins: list[str] | None = None,
    any_protocol: bool = False,
    skip_other: bool = False,
    keep: Path | None = None,
    progress: bool = False,
) -> Outcome:
    """Re-run the file's seed and compare; a file that cannot be re-run here is a UserError."""
    from ssl_bench.engine import RunConfig, execute
    from ssl_bench.registry import Registry

    r = results.Result(path)
    results.check(r)  # whole and unedited: identity = stored config, content hash
    proto = protocols.Protocol.model_validate(json.loads(r["protocol_json"]))
    if not any_protocol and not cpu_sized(proto):
        why = (
            f"protocol {proto.label} is not CPU-sized (verify re-runs {', '.join(CPU_SIZED)} as shipped; "
            "--any-protocol re-runs it anyway)"
        )
        if skip_other:
            return Outcome(Path(path), skipped=why)
        raise UserError(f"{r.where}: {why}")
    c = r.config
    specs = list(plugins) if plugins else list(c.get("plugins") or [])
    try:
        registry = Registry.discover(specs)
    except UserError as err:
        hint = "" if plugins else " (the run loaded it on its author's machine: give it with --plugin)"
        raise UserError(f"{r.where}: cannot re-run: {err}{hint}") from None
    threads = r.attrs.get("threads")
    if isinstance(threads, int) and threads > 0:
        import torch

        torch.set_num_threads(threads)
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="ssl-bench-verify-"))
    config = RunConfig(
        protocol=proto,
        method=c["method"],
        stream=c["stream"],
        strategy=c["strategy"],
        seed=c["seed"],
        out=folder,
        method_options=dict(c.get("method_options") or {}),
        strategy_options=dict(c.get("strategy_options") or {}),
        stream_options=dict(c.get("stream_options") or {}),
        data_root=c.get("data_root"),
        device="cpu",
        plugins=specs,
        progress=progress,
    )
    log.info(
        "verify: re-running %s / %s / %s, seed %d under %s on the CPU",
        config.method,
        config.stream,
        config.strategy,
        config.seed,
        proto.label,
    )
    try:
        again = results.Result(execute(config, registry, resume=False))
        return compare(r, again)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def compare(stored: results.Result, again: results.Result) -> Outcome:
    """Differences between a file and its re-run, and which exceed the tolerances."""
    out = Outcome(stored.path)
    for key in ("metrics/acc_matrix", "metrics/acc_init"):
        a, b = stored.get(key), again.get(key)
        if a is None and b is None:
            continue
        if a is None or b is None or np.shape(a) != np.shape(b):
            out.failures.append(f"{key} has shape {np.shape(a)} in the file but {np.shape(b)} in the re-run")
            continue
        diff = float(np.max(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)), initial=0.0))
        out.differences[key] = diff
        if diff > CELL_TOLERANCE:
            out.failures.append(f"{key} differs by up to {diff:.3f} (tolerance {CELL_TOLERANCE})")
    s, t = stored.summary, again.summary
    for key in sorted(set(s) | set(t)):
        if key not in s or key not in t:
            out.failures.append(f"summary key '{key}' is only in the {'file' if key in s else 're-run'}")
            continue
        diff = abs(float(s[key]) - float(t[key]))
        out.differences[key] = diff
        if not diff <= SUMMARY_TOLERANCE:
            out.failures.append(
                f"{key} is {s[key]:.4f} in the file but {t[key]:.4f} re-run (|difference| {diff:.3f} > {SUMMARY_TOLERANCE})"
            )
    return out
