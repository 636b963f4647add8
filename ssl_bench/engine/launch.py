"""Many runs at once: the product of methods x streams x strategies x seeds under one protocol, or the
union of several such products read from a grid file (:func:`grid`).

Launchers are existing engines, never a home-made scheduler: a local process pool
(``concurrent.futures``) or a cluster through submitit (SLURM, or submitit's local executor).
Runs whose result file already exists are skipped, so a sweep can be re-run to fill gaps; before the first
run starts, every distinct stream split is made once (:func:`check_streams`), so bad data fails in one line;
an interrupted run resumes from its checkpoint like any other run. Runs start seed by seed (every cell at
the first seed, then every cell at the next), so a sweep stopped part way has whole comparisons, not one
configuration's seeds.

The local pool starts its workers fresh (``spawn``), each with ``cores // jobs`` intra-op threads (cores: the
ones this process may use, ``os.sched_getaffinity``) and ``OMP_WAIT_POLICY=PASSIVE`` (unless set), so runs
sharing a machine do not spin-wait on each other's cores. ``per_gpu=K`` packs K runs on every visible GPU:
worker ``i`` is pinned to one GPU by ``CUDA_VISIBLE_DEVICES`` (:func:`gpu_slots`) before CUDA starts, and told
that K runs share it (``SSL_BENCH_RUNS_PER_GPU``), so each keeps its training data on the GPU only within 1/K of
the memory a run's data may take (:func:`ssl_bench.engine.build.fits_on_device`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import os
import tomllib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ssl_bench.engine import RunConfig, execute, load_data, make_plan
from ssl_bench.engine.build import RUNS_PER_GPU_ENV, check_sizes
from ssl_bench.errors import UserError
from ssl_bench.protocol import Protocol
from ssl_bench.protocol import load as load_protocol
from ssl_bench.registry import Registry

log = logging.getLogger(__name__)


#: (methods, streams, strategies, protocol): one product, under ``protocol`` (None: the sweep's own)
Cell = tuple[list[str], list[str], list[str], Protocol | None]


def expand(base: RunConfig, registry: Registry, cells: list[Cell], seeds: list[int]) -> list[RunConfig]:
    """Every run of the cells' products, each once, seed by seed, as RunConfigs that differ from ``base`` only
    in the swept fields (each method with its recipe) and, for a cell that names one, the protocol."""
    protocols = {base.protocol.label: base.protocol} | {c[3].label: c[3] for c in cells if c[3] is not None}
    keys = dict.fromkeys(
        (m, s, st, seed, (proto or base.protocol).label)
        for seed in seeds
        for methods, streams, strategies, proto in cells
        for m, s, st in itertools.product(methods, streams, strategies)
    )
    configs = [
        dataclasses.replace(base, protocol=protocols[label], method=m, stream=s, strategy=st, seed=seed, progress=False)
        for m, s, st, seed, label in keys
    ]
    for c in configs:  # every plugin and option of every run, checked before any run starts (fills each recipe)
        make_plan(c, registry)
    return configs


def grid(path: Path) -> list[Cell]:
    """The cells of a grid file: one ``[[grid]]`` table per product, each with the lists ``methods``,
    ``streams`` and ``strategies`` (for example, claim 1's runs, plus replay and MAS on one stream), and
    optionally ``protocol``, a shipped name or a .toml path, for runs under another protocol than the sweep's
    (for example the domain stream under a protocol whose dataset has domains)."""
    where = f"grid file '{path}'"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{where} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{where} is not valid TOML: {err}") from None
    tables = data.get("grid")
    extra = sorted(set(data) - {"grid"})
    if extra or not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UserError(f"{where}: write one or more [[grid]] tables and nothing else (found {extra or 'no [[grid]]'})")
    cells = []
    for i, table in enumerate(tables, 1):
        fields = ("methods", "streams", "strategies")
        unknown = sorted(set(table) - {*fields, "protocol"})
        if unknown:
            raise UserError(
                f"{where}: [[grid]] number {i} has unknown key '{unknown[0]}'; its keys are {', '.join(fields)}, protocol"
            )
        for field in fields:
            value = table.get(field)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise UserError(f'{where}: [[grid]] number {i} needs {field} = a list of names, e.g. {field} = ["..."]')
        name = table.get("protocol")
        if name is not None and (not isinstance(name, str) or not name):
            raise UserError(
                f'{where}: [[grid]] number {i}: protocol must be a protocol name or .toml path, e.g. protocol = "smoke"'
            )
        proto = None if name is None else load_protocol(name)
        cells.append((table["methods"], table["streams"], table["strategies"], proto))
    return cells


def check_streams(configs: list[RunConfig], registry: Registry) -> None:
    """Make every distinct (protocol, stream) split of ``configs`` once, at its first seed, before any run starts,
    so a stream the data cannot give (too few domains, no WordNet for ``distant``, experiences too small) stops
    the sweep with one line instead of failing its runs hours in."""
    seen = set()
    for c in configs:
        key = (c.protocol.label, c.stream, repr(sorted(c.stream_options.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            check_sizes(c, load_data(make_plan(c, registry))[1])
        except UserError as err:
            raise UserError(f"{describe(c)} under {c.protocol.label}: {err}") from None


def _run_one(config: RunConfig, threads: int) -> str:
    """Worker entry point: a fresh registry (plugins are imported in the worker) and one run."""
    from ssl_bench.registry import Registry

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="ssl-bench: %(message)s")
    return str(execute(config, Registry.discover(config.plugins)))


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask; all of them where the OS cannot say)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs a run can be pinned to, as ``CUDA_VISIBLE_DEVICES`` entries (the visible ones, else 0..n-1)."""
    count = torch.cuda.device_count()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def gpu_slots(gpus: list[str], per_gpu: int) -> list[str]:
    """One ``CUDA_VISIBLE_DEVICES`` value per worker: ``per_gpu`` workers on each GPU."""
    return [gpu for gpu in gpus for _ in range(per_gpu)]


def _pin(slots: Any, sharing: int = 1) -> None:
    """Pool initializer: take a GPU slot before anything starts CUDA in this worker, and tell the run how many runs
    share its GPU (each keeps its training data there only within its share of the memory allowed for data)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = slots.get()
    os.environ[RUNS_PER_GPU_ENV] = str(sharing)


@contextlib.contextmanager
def pool(jobs: int, slots: list[str] | None = None) -> Iterator[ProcessPoolExecutor]:
    """A local pool of ``jobs`` fresh workers (``len(slots)`` with GPU slots, each pinned to its GPU), started
    with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it."""
    context = multiprocessing.get_context("spawn")
    passive = "OMP_WAIT_POLICY" not in os.environ  # read by each worker's OpenMP when it starts
    if passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        if not slots:
            executor = ProcessPoolExecutor(max_workers=jobs, mp_context=context)
        else:
            queue = context.Queue()
            for slot in slots:
                queue.put(slot)
            sharing = max(slots.count(slot) for slot in slots)  # runs per GPU
            executor = ProcessPoolExecutor(
                max_workers=len(slots), mp_context=context, initializer=_pin, initargs=(queue, sharing)
            )
        with executor:
            yield executor
    finally:
        if passive:
            del os.environ["OMP_WAIT_POLICY"]


def run(
    configs: list[RunConfig],
    jobs: int = 1,
    launcher: str = "local",
    slurm: dict | None = None,
    per_gpu: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Run every config not already done; return (result paths, one-line failure messages).

    ``per_gpu``: (local launcher) that many runs at a time on every visible GPU instead of ``jobs``."""
    slots = None
    if per_gpu is not None:
        if launcher != "local":
            raise UserError("--per-gpu places runs for the local launcher; with slurm ask for GPUs with --slurm")
        gpus = visible_gpus()
        if per_gpu < 1 or not gpus:
            raise UserError(f"--per-gpu {per_gpu}: needs K >= 1 and a visible GPU (this torch sees none); use --jobs on a CPU")
        slots = gpu_slots(gpus, per_gpu)
        jobs = len(slots)
    todo = [c for c in configs if not c.result_path.exists()]
    done = [c.result_path for c in configs if c.result_path.exists()]
    if len(todo) < len(configs):
        log.info("%d of %d runs already have result files; running the other %d", len(done), len(configs), len(todo))
    if not todo:
        return done, []
    if launcher == "local":
        paths, failures = _local(todo, jobs, slots)
    elif launcher in ("slurm", "submitit-local"):
        paths, failures = _submitit(todo, launcher, slurm or {}, jobs)
    else:
        raise UserError(f"unknown launcher '{launcher}'; use local, slurm or submitit-local")
    return done + paths, failures


def describe(c: RunConfig) -> str:
    """``method/stream/strategy/seed N``: a run as the sweep's messages name it."""
    return f"{c.method}/{c.stream}/{c.strategy}/seed {c.seed}"


def _local(todo: list[RunConfig], jobs: int, slots: list[str] | None = None) -> tuple[list[Path], list[str]]:
    threads = max(1, cores() // jobs)
    paths, failures = [], []
    with pool(jobs, slots) as workers:
        futures = {workers.submit(_run_one, c, threads): c for c in todo}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="sweep", unit="run"):
            try:
                paths.append(Path(fut.result()))
            except Exception as err:  # noqa: BLE001 - one failed run must not stop the others
                failures.append(f"{describe(futures[fut])}: {type(err).__name__}: {err}")
    return paths, failures


def _submitit(todo: list[RunConfig], launcher: str, slurm: dict, jobs: int) -> tuple[list[Path], list[str]]:
    try:
        import submitit
    except ImportError:
        raise UserError("the slurm launcher needs submitit: pip install 'ssl-bench[sweep]'") from None
    folder = todo[0].out / "submitit"
    executor = submitit.AutoExecutor(folder=folder, cluster="local" if launcher == "submitit-local" else "slurm")
    if launcher == "slurm":
        executor.update_parameters(slurm_array_parallelism=jobs, **slurm)
    job_list = executor.map_array(_run_one, todo, [int(slurm.get("cpus_per_task", 1))] * len(todo))
    log.info("submitted %d jobs (logs in %s)", len(job_list), folder)
    paths, failures = [], []
    for job, c in tqdm(list(zip(job_list, todo)), desc="sweep", unit="run"):
        try:
            paths.append(Path(job.result()))
        except Exception as err:  # noqa: BLE001
            failures.append(f"{describe(c)}: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}")
    return paths, failures


def seeds_from(spec: str, protocol: Protocol) -> list[int]:
    """``all`` (the protocol's seeds) or a comma-separated list of integers."""
    if spec == "all":
        return list(protocol.seeds)
    try:
        seeds = [int(s) for s in spec.split(",") if s]
    except ValueError:
        raise UserError(f"--seeds must be 'all' or integers separated by commas, got '{spec}'") from None
    bad = [s for s in seeds if not 0 <= s < 2**32]
    if bad:
        raise UserError(f"--seeds: a seed is an integer from 0 to {2**32 - 1}, got {bad[0]}")
    return seeds
