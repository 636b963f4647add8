"""``ssl-bench verify``: re-run a result file's seed from its stored configuration and compare.

``submit`` and the leaderboard check that a file was not edited after its run; they cannot
tell a consistent forgery (made-up arrays, summarised and hashed the way ssl-bench does) from
a real run. Re-running can: ``verify`` reads the file's stored protocol and configuration
(method, stream, strategy, seed, options), trains and evaluates that one run again on the CPU,
and compares the new accuracies, loss curve and summary with the file's.

Which protocols. Every shipped protocol of a CPU family (:data:`CPU_FAMILIES`: ``smoke`` and ``cpu``, e.g.
smoke, forgetting, tinyimagenet-cpu and its twins; a seed takes minutes to half an hour on two cores), current
or kept version, unchanged (the file's protocol hash is the shipped one's). ``--any-protocol`` re-runs others,
which may take hours; ``--skip-non-cpu`` skips them with a note.

What a re-run must match is what the machines explain:

- **Same machine** (:func:`machine_differences` is empty): the same CPU model and instruction-set flags, ATen's
  dispatch level, thread count, BLAS and oneDNN builds, torch/numpy versions and ops backend, as the file
  records them (:func:`ssl_bench.engine.record.environment`). A re-run there is bit-identical (measured: the
  shipped smoke seed-0 file re-run with 2 threads, difference 0.000 everywhere), so every accuracy, the loss
  curve and every summary number must be *equal*. Any difference fails, however small: a forgery that moved
  one accuracy by 3 points, with the summary and content hash recomputed, fails here.
- **Another machine** (or a file that does not record its CPU): the thread count, torch/BLAS versions and
  CPU change the order of floating-point reductions, and training drifts (1 instead of 2 threads moved one
  smoke accuracy by 0.044; another machine moved a tinyimagenet-cpu accuracy by 0.025). Each number (every
  accuracy of the matrix and random-init row, every summary number) may then differ by at most
  ``min(3 sd, 0.02)`` (:func:`tolerances`): sd is that number's standard deviation (ddof = 1) over the other
  seeds of the same configuration (files in the verified file's folder with the same protocol hash, method,
  stream, strategy and run identity) and the re-run, when at least :data:`MIN_OTHER_SEEDS` other seeds are
  there; otherwise 0.02 (2 points) alone. A cross-machine re-run is like another seed, so a difference beyond
  what the seeds allow is flagged; the cap keeps a large seed spread from hiding a forgery of a few points.
  Flags here say "not confirmed on this machine": re-running on the file's kind of machine, where it must be
  bit-identical, decides. The loss curve is not compared across machines (it differs from the first steps).

When the file records the thread count it ran with (attribute ``threads``), the re-run uses it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench import protocol as protocols
from ssl_bench import results
from ssl_bench.errors import UserError

log = logging.getLogger(__name__)

#: protocol families whose seeds run in minutes on a 2-core CPU: every shipped protocol of these families is re-run
CPU_FAMILIES = ("smoke", "cpu")
#: what decides bit-identity (attributes of every result file, :func:`ssl_bench.engine.record.environment`)
MACHINE_KEYS = (
    "cpu_model",
    "cpu_flags",
    "cpu_capability",
    "threads",
    "blas",
    "onednn",
    "onednn_enabled",
    "torch_version",
    "numpy_version",
    "ops_backend",
)
CROSS_MACHINE_CAP = 0.02  #: across machines: no number may move by more than 2 points ...
SIGMAS = 3.0  #: ... nor by more than 3 standard deviations over the configuration's seeds
MIN_OTHER_SEEDS = 2  #: other seeds' files needed to estimate that spread (else the cap alone)
ARRAYS = ("metrics/acc_matrix", "metrics/acc_init")  #: compared on every machine
SAME_MACHINE_ONLY = ("train/loss",)  #: compared for equality on the same machine only


@dataclass
class Outcome:
    path: Path
    skipped: str | None = None  #: why the file was not re-run
    differences: dict[str, float] = field(default_factory=dict)  #: what -> largest |stored - re-run|
    failures: list[str] = field(default_factory=list)  #: what differs beyond the tolerance
    machine: list[str] = field(default_factory=list)  #: how this machine differs from the file's ([]: the same)
    seeds: int = 0  #: other seeds' files the cross-machine tolerance was estimated from

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def same_machine(self) -> bool:
        return not self.machine

    def describe(self) -> str:
        """One line on how the re-run was judged."""
        if self.same_machine:
            return "same CPU, flags, threads and versions as the file: every number must be bit-identical"
        spread = (
            f"{SIGMAS:g} sd over {self.seeds} other seed(s) of this configuration and the re-run"
            if self.seeds >= MIN_OTHER_SEEDS
            else f"fewer than {MIN_OTHER_SEEDS} other seeds' files next to it, so the cap alone"
        )
        return (
            f"another machine than the file's ({'; '.join(self.machine)}): each number within min({spread}, "
            f"{CROSS_MACHINE_CAP}); a flag here is decided by re-running on the file's kind of machine"
        )


def cpu_sized(proto: protocols.Protocol) -> bool:
    """A shipped protocol (current or kept version) of a CPU family (:data:`CPU_FAMILIES`), unchanged."""
    if proto.family not in CPU_FAMILIES:
        return False
    shipped = protocols.load_shipped(proto.name, proto.version)
    return shipped is not None and shipped.hash == proto.hash


def machine_differences(stored: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """How this machine (``here``: :func:`ssl_bench.engine.record.environment` and versions) differs from the one
    that made the file (its attributes), in what decides bit-identity; [] when it is the same."""
    out = []
    for key in MACHINE_KEYS:
        if key not in stored:
            out.append(f"the file does not record {key}")
        elif str(stored[key]) != str(here.get(key)):
            out.append(f"{key} {stored[key]!r} in the file, {here.get(key)!r} here")
    return out


def here() -> dict[str, Any]:
    """This machine's values of :data:`MACHINE_KEYS`."""
    import torch

    from ssl_bench.engine.record import environment

    return {**environment(), "torch_version": torch.__version__}


def other_seeds(stored: results.Result) -> list[results.Result]:
    """The files next to ``stored`` of the same configuration (protocol hash, method, stream, strategy and run
    identity) and another seed; unreadable files are skipped."""
    keys = ("protocol_hash", "method", "stream", "strategy", "run_identity")
    mine = {k: stored.attrs.get(k) for k in keys}
    out = []
    for path in sorted(Path(stored.path).parent.glob("*.h5")):
        if path.resolve() == Path(stored.path).resolve():
            continue
        try:
            other = results.Result(path)
            same = all(other.attrs.get(k) == v for k, v in mine.items()) and other.attrs.get("seed") != stored.attrs.get("seed")
        except (UserError, OSError, KeyError, ValueError) as err:
            log.warning("verify: skipped %s: %s", path, err)
            continue
        if same:
            out.append(other)
    return out


def _numbers(r: results.Result) -> dict[str, np.ndarray]:
    """Every compared number of ``r`` by name: the arrays (``metrics/acc_matrix`` ...) and the summary numbers."""
    out = {k: np.asarray(r.get(k), dtype=float) for k in ARRAYS + SAME_MACHINE_ONLY if r.get(k) is not None}
    out.update({f"summary {k}": np.asarray(float(v)) for k, v in r.summary.items()})
    return out


def tolerances(again: results.Result, others: Sequence[results.Result]) -> dict[str, np.ndarray]:
    """The cross-machine tolerance of every number: ``min(SIGMAS * sd, CROSS_MACHINE_CAP)`` with sd over the other
    seeds and the re-run (ddof = 1) when :data:`MIN_OTHER_SEEDS` or more other seeds have it; else the cap."""
    mine = _numbers(again)
    theirs = [_numbers(o) for o in others]
    out = {}
    for key, value in mine.items():
        values = [t[key] for t in theirs if key in t and t[key].shape == value.shape]
        if len(values) < MIN_OTHER_SEEDS:
            out[key] = np.full(value.shape, CROSS_MACHINE_CAP)
            continue
        sd = np.std(np.stack([*values, value]), axis=0, ddof=1)
        out[key] = np.minimum(SIGMAS * sd, CROSS_MACHINE_CAP)
    return out


def verify(
    path: str | Path,
    plugins: list[str] | None = None,
    any_protocol: bool = False,
    skip_other: bool = False,
    keep: Path | None = None,
    progress: bool = False,
) -> Outcome:
    """Re-run the file's seed and compare; a file that cannot be re-run here is a UserError."""
    from ssl_bench.engine import execute
    from ssl_bench.registry import Registry

    r = results.Result(path)
    results.check(r)  # whole and unedited: identity = stored config, content hash
    proto = protocols.Protocol.model_validate(json.loads(r["protocol_json"]))
    if not any_protocol and not cpu_sized(proto):
        why = (
            f"protocol {proto.label} is not a shipped protocol of a CPU family (verify re-runs the shipped "
            f"{', '.join(CPU_FAMILIES)} families' protocols unchanged; --any-protocol re-runs it anyway)"
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
    if isinstance(threads, (int, np.integer)) and threads > 0:
        import torch

        torch.set_num_threads(int(threads))
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="ssl-bench-verify-"))
    config = stored_config(proto, c, folder, data_root=c.get("data_root"), plugins=specs, progress=progress)
    _same_inputs(r, config, registry)
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
        return compare(r, again, machine_differences(r.attrs, here()), other_seeds(r))
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def stored_config(proto: protocols.Protocol, c: Mapping[str, Any], out: Path, **more: Any) -> Any:
    """The CPU run configuration that a result file's stored ``config`` (``c``) gives under ``proto``, writing to
    ``out``: what :func:`verify` re-runs, and what checks of a file's identity rebuild (``more``: further
    :class:`~ssl_bench.engine.RunConfig` fields)."""
    from ssl_bench.engine import RunConfig

    return RunConfig(
        protocol=proto,
        method=c["method"],
        stream=c["stream"],
        strategy=c["strategy"],
        seed=c["seed"],
        out=out,
        method_options=dict(c.get("method_options") or {}),
        strategy_options=dict(c.get("strategy_options") or {}),
        stream_options=dict(c.get("stream_options") or {}),
        recipe_overrides=dict(c.get("recipe_overrides") or {}),
        precision=str(c.get("precision") or "auto"),  # a --precision variant (e.g. __fp32) is part of the identity
        device="cpu",
        **more,
    )


def _same_inputs(r: results.Result, config: Any, registry: Any) -> None:
    """The files the run read by path (a manifest) must hold what they held then (their sha256, stored in the
    file's configuration since issue 31): a re-run of other content would compare two different runs."""
    from ssl_bench.plan import make_plan

    stored = r.config.get("inputs")
    if not isinstance(stored, dict):
        return  # a file from before inputs were recorded
    make_plan(config, registry)
    changed = sorted(k for k in set(stored) | set(config.inputs) if stored.get(k) != config.inputs.get(k))
    if changed:
        raise UserError(
            f"{r.where}: cannot re-run: what its option(s) {', '.join(changed)} name is not what the run read "
            "(another sha256, or no such file here); restore that file or give its path"
        )


def compare(
    stored: results.Result,
    again: results.Result,
    machine: Sequence[str] = (),
    others: Sequence[results.Result] = (),
) -> Outcome:
    """Differences between a file and its re-run, and which exceed what the machines explain: equality when
    ``machine`` (how the re-running machine differs from the file's) is empty, else :func:`tolerances` from the
    ``others`` seeds' files."""
    out = Outcome(stored.path, machine=list(machine), seeds=len(others))
    a, b = _numbers(stored), _numbers(again)
    allowed = tolerances(again, others) if machine else {}
    for key in sorted(set(a) | set(b)):
        if machine and key in SAME_MACHINE_ONLY:
            continue
        if key not in a or key not in b:
            out.failures.append(f"{key} is only in the {'file' if key in a else 're-run'}")
            continue
        if a[key].shape != b[key].shape:
            out.failures.append(f"{key} has shape {a[key].shape} in the file but {b[key].shape} in the re-run")
            continue
        diff = np.abs(a[key] - b[key])
        out.differences[key] = float(np.max(diff, initial=0.0))
        if not machine:
            if not np.array_equal(a[key], b[key]):
                n = int(np.count_nonzero(a[key] != b[key]))
                out.failures.append(
                    f"{key} differs in {n} value(s), by up to {out.differences[key]:.6g}, where a re-run on the same "
                    "machine is bit-identical"
                )
            continue
        over = diff > allowed[key]
        if over.any():
            i = np.unravel_index(int(np.argmax(np.where(over, diff - allowed[key], -np.inf))), diff.shape)
            where = f"{key}{list(map(int, i)) if diff.ndim else ''}"
            out.failures.append(
                f"{where} is {float(a[key][i]):.4f} in the file but {float(b[key][i]):.4f} re-run (|difference| "
                f"{float(diff[i]):.4f} > {float(allowed[key][i]):.4f}, {int(over.sum())} value(s) over)"
            )
    return out
