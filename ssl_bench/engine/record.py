"""The result record: everything a run measured, written as one HDF5 file (layout: :mod:`ssl_bench.results`).

:func:`check_writable` runs before any training, so an unwritable ``--out`` fails at once;
:func:`write` gathers the configuration, the metrics, the stream's split, the phases, the
loss curve, what the strategy recorded, the summary numbers and the environment (:func:`environment`:
intra-op threads, ops backend, library versions; and a hash of each plugin's source), and hands them
to :func:`ssl_bench.results.write` (atomic).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch

import ssl_bench
from ssl_bench import results
from ssl_bench.errors import UserError
from ssl_bench.results import continual

if TYPE_CHECKING:
    from ssl_bench.engine.build import Run


def check_writable(out: Path, keep: bool = True) -> None:
    """Fail early, before any training, if results could not be written to ``out`` (created). ``keep=False``
    leaves no trace: the folders it had to create are removed again, so a command that goes on to stop on bad
    input creates nothing (the run creates ``out`` when it starts)."""
    created = [] if keep else [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".ssl-bench-write-test-{os.getpid()}"
        try:
            probe.write_bytes(b"x")  # one byte: a file-size limit of 0 (ulimit -f 0) lets an empty file through
        finally:
            probe.unlink(missing_ok=True)
            for folder in created:  # deepest first; each empty since the probe is gone
                folder.rmdir()
    except OSError as err:
        if err.errno == errno.EFBIG:
            raise UserError(
                f"cannot write results to --out '{out}': a file-size limit stops every write ({err.strerror}); "
                "raise it (ulimit -f) and rerun"
            ) from None
        raise UserError(f"cannot write results to --out '{out}': {err.strerror or err}; choose a writable folder") from None


def write(run: Run, seconds: float) -> Path:
    """Write the result file of a finished run to ``run.config.result_path``; return its path. ``seconds``: the
    run's wall-clock seconds over all its processes (:meth:`ssl_bench.engine.cost.Cost.elapsed`)."""
    cfg, protocol = run.config, run.protocol
    arrays: dict[str, Any] = {
        "config": json.dumps(cfg.to_json(), sort_keys=True, default=str),
        "protocol_json": json.dumps(protocol.model_dump(mode="json"), sort_keys=True),
        "recipe": json.dumps(cfg.recipe, sort_keys=True),
    }
    primary = f"{protocol.eval.primary}/acc"
    if primary not in run.init_metrics:
        raise UserError(f"the primary evaluator '{protocol.eval.primary}' returned no 'acc'")
    acc = np.stack([np.asarray(a, dtype=float) for a in run.metrics[primary]])
    arrays["metrics/acc_matrix"] = acc
    arrays["metrics/acc_init"] = np.asarray(run.init_metrics[primary], dtype=float)
    for key, values in run.metrics.items():
        arrays[f"metrics/{key}"] = np.stack([np.asarray(v) for v in values])
    for key, value in run.init_metrics.items():
        arrays[f"init/{key}"] = np.asarray(value)
    for key, value in run.end_metrics.items():
        arrays[f"end/{key}"] = np.asarray(value)
    ds = run.dataset
    arrays["stream/class_names"] = np.array(ds.classes, dtype=object).astype("S")
    arrays["stream/domain_names"] = np.array(ds.domains, dtype=object).astype("S")
    for e in run.experiences:
        base = f"stream/experience_{e.index}"
        arrays[f"{base}/train_idx"] = np.asarray(e.train_idx, dtype=np.int64)
        arrays[f"{base}/test_idx"] = np.asarray(e.test_idx, dtype=np.int64)
        arrays[f"{base}/classes"] = np.asarray(e.classes, dtype=np.int64)
        arrays[f"{base}/domains"] = np.asarray(e.domains, dtype=np.int64)
        arrays[f"{base}/name"] = e.name
        for key, value in e.info.items():
            arrays[f"{base}/info/{key}"] = value if isinstance(value, str) else np.asarray(value)
    arrays["stream/class_order"] = np.concatenate([np.asarray(e.classes, dtype=np.int64) for e in run.experiences])
    arrays["stream/domain_order"] = np.concatenate([np.asarray(e.domains, dtype=np.int64) for e in run.experiences])
    arrays["phases/names"] = np.array([p.name for p in run.phases], dtype="S")
    arrays["phases/steps"] = np.array([p.steps for p in run.phases], dtype=np.int64)
    arrays["phases/experiences"] = json.dumps([p.experiences for p in run.phases])
    arrays["train/loss"] = np.asarray(run.losses, dtype=np.float32)
    for key, value in run.strategy.record().items():
        arrays[f"strategy/{key}"] = value if isinstance(value, str) else np.asarray(value)
    arrays.update(run.cost.arrays())
    summary = continual.summarize(arrays)
    attrs = {
        "protocol": protocol.name,
        "protocol_version": protocol.version,
        "protocol_hash": protocol.hash,
        "method": cfg.method,
        "stream": cfg.stream,
        "strategy": cfg.strategy,
        "seed": cfg.seed,
        "ssl_bench_version": ssl_bench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": _device_name(run.device),
        "git_commit": _git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 2),
        "steps": run.step,
        "images_processed": run.images_processed,
        "recipe_source": cfg.recipe_source,
        "run_identity": cfg.identity,
        "variant": cfg.variant,
        "dataset": protocol.dataset.name,
        "world_size": run.world_size,
        "precision": run.precision,
        "precision_tag": cfg.precision_tag or "",
        "tf32": run.tf32,  # float32 products rounded to TF32 on the GPU (never under fp32)
        "plugins": {p.name: p.version for p in run.registry.plugins.values() if not p.error},
        "plugin_hashes": {p.name: source_hash(p.module) for p in run.registry.plugins.values() if not p.error},
        **environment(),
    }
    definitions = {k: v for k, v in continual.DEFINITIONS.items() if k in summary}
    return results.write(cfg.result_path, attrs, arrays, {"summary": summary, "summary_definitions": definitions})


def environment() -> dict[str, Any]:
    """What decides whether a re-run is bit-identical: intra-op threads, the ops backend, library versions, and the
    CPU: its model and instruction-set flags (``/proc/cpuinfo``: the AVX/AMX/FMA/SSE4 families, which decide the
    kernels oneDNN, MKL and ATen pick), ATen's dispatch level (``cpu_capability``), and the BLAS and oneDNN builds
    (``torch.__config__.show()``); ``ssl-bench verify`` requires equality where all of them match
    (:mod:`ssl_bench.results.reproduce`)."""
    from ssl_bench import ops

    config = torch.__config__.show()
    return {
        "threads": torch.get_num_threads(),
        "ops_backend": ops.backend(),
        "numpy_version": np.__version__,
        "h5py_version": h5py.__version__,
        "cuda_version": torch.version.cuda or "",
        "cudnn_version": str(torch.backends.cudnn.version() or "") if torch.backends.cudnn.is_available() else "",
        **cpu(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "blas": _config_line(config, ("Math Kernel Library", "OpenBLAS", "BLIS", "Accelerate")),
        "onednn": _config_line(config, ("MKL-DNN", "oneDNN")) if torch.backends.mkldnn.is_available() else "",
        "onednn_enabled": bool(torch.backends.mkldnn.enabled),
    }


#: /proc/cpuinfo flag prefixes that decide which vector kernels run (and so the order of floating-point sums)
ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4")


def cpu(cpuinfo: str | None = None) -> dict[str, str]:
    """``cpu_model`` and ``cpu_flags`` (the instruction-set flags of :data:`ISA_PREFIXES`, sorted, space-separated)
    from ``/proc/cpuinfo`` (or the text given); the platform's processor name and no flags where it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor's
            fields[key.strip()] = value.strip()
    model = fields.get("model name") or fields.get("Processor") or platform.processor() or platform.machine()
    flags = sorted({f for f in (fields.get("flags") or fields.get("Features") or "").split() if f.startswith(ISA_PREFIXES)})
    return {"cpu_model": model, "cpu_flags": " ".join(flags)}


def _config_line(config: str, names: tuple[str, ...]) -> str:
    """The line of ``torch.__config__.show()`` that names one of ``names`` (stripped of its list marker), or ""."""
    for line in config.splitlines():
        if any(n in line for n in names):
            return line.strip().lstrip("- ").strip()
    return ""


def source_hash(module: Any) -> str:
    """sha256 of a plugin's source: its file, or every ``.py`` file of its package (paths in order)."""
    file = getattr(module, "__file__", None)
    if not file:
        return ""
    path = Path(file)
    files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(path.parent).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def _git_commit() -> str:
    try:
        root = Path(ssl_bench.__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()} x{os.cpu_count()}"
