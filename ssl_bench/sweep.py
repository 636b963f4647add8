"""Many runs at once: the product of methods x streams x strategies x seeds under one protocol.

Launchers are existing engines, never a home-made scheduler: a local process pool
(``concurrent.futures``) or a cluster through submitit (SLURM, or submitit's local executor).
Runs whose result file already exists are skipped, so a sweep can be re-run to fill gaps;
an interrupted run resumes from its checkpoint like any other run.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ssl_bench.engine import RunConfig, execute, resolve_recipe
from ssl_bench.errors import UserError
from ssl_bench.protocol import Protocol
from ssl_bench.registry import Registry

log = logging.getLogger(__name__)


def expand(
    base: RunConfig, registry: Registry, methods: list[str], streams: list[str], strategies: list[str], seeds: list[int]
) -> list[RunConfig]:
    """Every combination, as RunConfigs that differ from ``base`` only in the swept fields (each method with its recipe)."""
    return [
        resolve_recipe(dataclasses.replace(base, method=m, stream=s, strategy=st, seed=seed, progress=False), registry)
        for m, s, st, seed in itertools.product(methods, streams, strategies, seeds)
    ]


def _run_one(config: RunConfig, threads: int) -> str:
    """Worker entry point: a fresh registry (plugins are imported in the worker) and one run."""
    from ssl_bench.registry import Registry

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="ssl-bench: %(message)s")
    return str(execute(config, Registry.discover(config.plugins)))


def run(
    configs: list[RunConfig], jobs: int = 1, launcher: str = "local", slurm: dict | None = None
) -> tuple[list[Path], list[str]]:
    """Run every config not already done; return (result paths, one-line failure messages)."""
    todo = [c for c in configs if not c.result_path.exists()]
    done = [c.result_path for c in configs if c.result_path.exists()]
    if len(todo) < len(configs):
        log.info("%d of %d runs already have result files; running the other %d", len(done), len(configs), len(todo))
    if not todo:
        return done, []
    if launcher == "local":
        paths, failures = _local(todo, jobs)
    elif launcher in ("slurm", "submitit-local"):
        paths, failures = _submitit(todo, launcher, slurm or {}, jobs)
    else:
        raise UserError(f"unknown launcher '{launcher}'; use local, slurm or submitit-local")
    return done + paths, failures


def _describe(c: RunConfig) -> str:
    return f"{c.method}/{c.stream}/{c.strategy}/seed {c.seed}"


def _local(todo: list[RunConfig], jobs: int) -> tuple[list[Path], list[str]]:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    paths, failures = [], []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_run_one, c, threads): c for c in todo}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="sweep", unit="run"):
            try:
                paths.append(Path(fut.result()))
            except Exception as err:  # noqa: BLE001 - one failed run must not stop the others
                failures.append(f"{_describe(futures[fut])}: {type(err).__name__}: {err}")
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
            failures.append(f"{_describe(c)}: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}")
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
