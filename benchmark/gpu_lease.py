"""The Python steps of ``benchmark/gpu_lease.sh``: each appends one JSON line per measurement to ``--results`` as
soon as that measurement ends (flushed), so a step cut off by its timeout leaves what it finished.

    python benchmark/gpu_lease.py STEP --results FILE --work DIR --timeout SECONDS [--cpu]

Steps:
- ``sync``: each of ``--methods`` (``method`` or ``method:strategy``) trains phase 0 of a small two-experience
  protocol, then phase 1 under ``torch.cuda.set_sync_debug_mode("error")``: any operation that makes the host wait
  for the GPU raises, except the loop's designed copy of the losses (``loop._flush``, every ``LOG_EVERY`` steps
  and at the phase's end). One line per method: ``ok``, or the error and the line of ssl-bench that caused it.
- ``speed``: :func:`gpu_speed.throughput` at 32 and 64 px (the engine's loop against the old loop's settings and
  a bare bf16 loop; the backbone's share of the bf16 peak), then :func:`gpu_speed.cross_rank_memory`.
- ``packing``: :func:`gpu_speed.packing` with K = 1, 4, 8 runs per GPU (one wave each) of the ``smoke`` protocol.
- ``sweep``: a small GPU sweep on data that travels (none needs carrying): the shipped ``forgetting`` protocol
  (generated shapes, the domain stream where sequential training forgets) for SimCLR and BYOL x sequential,
  joint, replay and MAS x its 2 seeds, 8 runs per GPU, fp32 (TF32 off, so comparable in precision with the
  CPU's runs of it); one line per result file: final accuracy, forgetting, seconds, device.
- ``compile``: :func:`gpu_speed.compile_speed` at 32 px.

``--cpu`` (``gpu_lease.sh --dry-run-on-cpu``): the same code on the CPU with tiny sizes and a tiny protocol,
without the sync debug mode (it needs CUDA) and without ``compile`` (inductor's C++ build takes minutes).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import gpu_speed
import torch

#: two experiences of generated shapes; phase 1 is the one checked (the strategies' per-step work is on by then)
SMALL = textwrap.dedent("""
    name = "lease"
    version = 1
    family = "lease"
    seeds = [0, 1]
    [dataset]
    name = "synthetic"
    resolution = {res}
    options = {{ train_per_class_domain = {per_class}, test_per_class_domain = 2, n_domains = 2 }}
    [stream]
    n_experiences = 2
    [backbone]
    {backbone}
    [train]
    epochs_per_experience = 1
    batch_size = {batch}
    [eval]
    probe_train_per_experience = 0
    [recipe]
    lr = 0.05
    lr_scaling = "none"
    schedule = "constant"
""")
RESNET = 'name = "resnet18"\noptions = {{ small_stem = true, width = {width} }}'
VIT = 'name = "vit_tiny"\noptions = {{ patch_size = 4, depth = {depth} }}'
VIT_METHODS = {"mae", "mocov3"}
#: per method: options of the check (DINO: 2 local crops, so multi-crop is checked; SwAV: its queue)
OPTIONS = {"dino": {"n_local": 2}, "swav": {"n_local": 2, "queue_length": 256, "queue_start_epoch": 0.0}}
#: the dry run's heads, small enough for seconds on a CPU (the GPU checks the methods' default sizes)
TINY_HEADS = {
    "proj_hidden": 32, "proj_dim": 16, "pred_hidden": 16, "out_dim": 32, "hidden": 32, "bottleneck": 16,
    "n_prototypes": 16, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 4, "queue_size": 64,
}  # fmt: skip


class Results:
    """Appends one JSON object per line to a file, flushed at once."""

    def __init__(self, path: Path, step: str):
        self.path, self.step = path, step

    def emit(self, **fields) -> None:
        line = json.dumps({"step": self.step, "time": time.strftime("%H:%M:%S"), **fields}, default=str)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
        print(line, flush=True)


def _where(err: BaseException) -> str:
    """The innermost line of ssl-bench's own code in the traceback of ``err``."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "ssl_bench" in f.filename or "plugins" in f.filename]
    return f"{frames[-1].filename.split('/work/')[-1]}:{frames[-1].lineno}" if frames else "?"


def small_protocol(work: Path, method: str, cpu: bool) -> Path:
    sizes = dict(res=16, batch=16, per_class=4) if cpu else dict(res=32, batch=128, per_class=384)  # 60 steps a phase
    backbone = VIT.format(depth=1 if cpu else 4) if method in VIT_METHODS else RESNET.format(width=0.125 if cpu else 1.0)
    path = work / f"lease_{method}.toml"
    path.write_text(SMALL.format(backbone=backbone, **sizes))
    return path


def sync(results: Results, work: Path, cpu: bool, deadline: float, methods: tuple[str, ...] = ()) -> bool:
    from ssl_bench.engine import loop
    from ssl_bench.engine.build import Run
    from ssl_bench.plan import RunConfig, make_plan
    from ssl_bench.protocol import load
    from ssl_bench.registry import Registry

    registry, ok = Registry.discover(), True
    real_flush = loop._flush

    def flush(*args, **kwargs):  # the loop's designed copy of the losses: the one wait allowed
        torch.cuda.set_sync_debug_mode(0)
        try:
            return real_flush(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    for spec in methods:
        if time.time() > deadline:
            results.emit(method=spec, ok=None, skipped="out of time")
            continue
        method, _, strategy = spec.partition(":")
        t0 = time.time()
        options = dict(OPTIONS.get(method, {}))
        if cpu:
            params = inspect.signature(registry.get("method", method).factory).parameters
            options.update({k: v for k, v in TINY_HEADS.items() if k in params})
        config = RunConfig(
            protocol=load(str(small_protocol(work, method, cpu))),
            method=method,
            stream="instance",
            strategy=strategy or "sequential",
            seed=0,
            out=work / "runs",
            method_options=options,
            device="cpu" if cpu else "cuda",
            progress=False,
        )
        try:
            run = Run(make_plan(config, registry))
            for i, phase in enumerate(run.phases):
                run.phase_index = i
                run.strategy.before_phase(run, phase)
                checked = i == len(run.phases) - 1 and not cpu
                if checked:
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("error")
                    loop._flush = flush
                try:
                    loop.train_phase(run, phase, gpu_speed.Bar())
                finally:
                    if checked:
                        torch.cuda.set_sync_debug_mode(0)
                        loop._flush = real_flush
                run.strategy.after_phase(run, phase)
            losses = run.losses
            results.emit(
                method=spec,
                ok=bool(all(math.isfinite(v) for v in losses)),
                phase_checked=run.phases[-1].name,
                steps_checked=run.phases[-1].steps,
                last_loss=round(losses[-1], 4),
                precision=run.precision,
                channels_last=run.channels_last,
                data_on_device=run.device_data is not None,
                ops_backend=__import__("ssl_bench.ops", fromlist=["backend"]).backend(),
                seconds=round(time.time() - t0, 1),
            )
        except Exception as err:  # noqa: BLE001 - one method's failure is a result; the others still run
            ok = False
            results.emit(
                method=spec,
                ok=False,
                error=f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}",
                where=_where(err),
                seconds=round(time.time() - t0, 1),
            )
    return ok


def speed(results: Results, work: Path, cpu: bool, deadline: float) -> bool:
    sizes = (
        [dict(res=16, steps=2, batch=16, width=0.125, per_class=4)] if cpu else [dict(res=32, steps=30), dict(res=64, steps=30)]
    )
    for s in sizes:
        if time.time() > deadline:
            results.emit(measure="throughput", res=s["res"], skipped="out of time")
            continue
        results.emit(measure="throughput", **gpu_speed.throughput(work, **s))
    if not cpu and time.time() < deadline:
        results.emit(measure="cross_rank_memory", **gpu_speed.cross_rank_memory())
    return True


def packing(results: Results, work: Path, cpu: bool, deadline: float) -> bool:
    protocol = str(_tiny(work)) if cpu else "smoke"
    ok = True
    for k in (1,) if cpu else (1, 4, 8):
        left = deadline - time.time()
        if left < 20:
            results.emit(measure="packing", per_gpu=k, skipped="out of time")
            continue
        runs = k * (1 if cpu else torch.cuda.device_count())
        try:
            results.emit(measure="packing", **gpu_speed.packing(work, k, runs, protocol, timeout=left))
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            ok = False
            results.emit(measure="packing", per_gpu=k, error=str(err)[-500:])
    return ok


def sweep(results: Results, work: Path, cpu: bool, deadline: float) -> bool:
    from ssl_bench.results import Result

    out = work / "sweep"
    if cpu:
        grid = ["--protocol", str(_tiny(work)), "--methods", "simclr", "--strategies", "sequential,replay"]
        grid += ["--seeds", "0", "--jobs", "2", "--device", "cpu"]
    else:
        grid = ["--protocol", "forgetting", "--methods", "simclr,byol", "--strategies", "sequential,joint,replay,mas"]
        grid += ["--seeds", "all", "--per-gpu", "8", "--device", "cuda"]
    cmd = [sys.executable, "-m", "ssl_bench.cli", "-q", "sweep", *grid, "--precision", "fp32", "--out", str(out)]
    t0 = time.time()
    try:
        proc = gpu_speed.run_group(cmd, max(1.0, deadline - time.time()))
        status = proc.returncode
        tail = proc.stderr.strip()[-800:]
    except subprocess.TimeoutExpired:
        status, tail = "stopped at its timeout (finished runs kept)", ""
    files = sorted(out.glob("*.h5"))
    for path in files:
        r = Result(path)
        summary = r.summary
        results.emit(
            measure="sweep_run",
            file=path.name,
            **{k: r.attrs.get(k) for k in ("method", "stream", "strategy", "seed", "seconds", "device", "precision", "tf32")},
            **{k: round(summary[k], 4) for k in ("final_avg_acc", "forgetting_max", "avg_acc") if k in summary},
        )
    results.emit(measure="sweep", status=status, runs=len(files), seconds=round(time.time() - t0, 1), stderr_tail=tail)
    return status == 0


def compile_step(results: Results, work: Path, cpu: bool, deadline: float) -> bool:
    if cpu:
        results.emit(measure="compile", skipped="dry run: inductor's C++ build takes minutes on a CPU")
        return True
    results.emit(measure="compile", **gpu_speed.compile_speed(work, 32, 30))
    return True


def _tiny(work: Path) -> Path:
    """A protocol of seconds per run on the CPU (the dry run's packing and sweep)."""
    path = work / "tiny.toml"
    text = small_protocol(work, "simclr", True).read_text().replace('name = "lease"', 'name = "lease-tiny"')
    path.write_text(text.replace("[eval]", '[eval]\nevaluators = ["knn"]\nprimary = "knn"'))  # kNN: the cheapest
    return path


STEPS = {"sync": sync, "speed": speed, "packing": packing, "sweep": sweep, "compile": compile_step}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=sorted(STEPS))
    p.add_argument("--results", type=Path, required=True, help="the JSON-lines file to append to")
    p.add_argument("--work", type=Path, required=True, help="a scratch folder")
    p.add_argument("--timeout", type=float, required=True, help="seconds this step may take (its last measurement ends by then)")
    p.add_argument("--methods", default="simclr,byol:mas,dino,mae", help="sync: method or method:strategy, comma-separated")
    p.add_argument("--cpu", action="store_true", help="the dry run: tiny sizes on the CPU")
    args = p.parse_args(argv)
    # the step's hard timeout (gpu_lease.sh) sends SIGTERM: unwind, so that a sweep's process group is killed too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.work.mkdir(parents=True, exist_ok=True)
    results = Results(args.results, args.step)
    deadline = time.time() + args.timeout - 5  # a measurement is not started within 5 s of the timeout
    kwargs = dict(methods=tuple(args.methods.split(","))) if args.step == "sync" else {}
    try:
        ok = STEPS[args.step](results, args.work, args.cpu, deadline, **kwargs)
    except Exception as err:  # noqa: BLE001 - recorded, then the step fails
        results.emit(error=f"{type(err).__name__}: {str(err).strip()[:500]}", where=_where(err))
        traceback.print_exc()
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
