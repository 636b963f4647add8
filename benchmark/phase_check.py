"""Does a method learn, or collapse, in the first phase of a protocol? A recipe-tuning diagnostic.

Not a test: a diagnostic whose numbers go into benchmark/RESULTS.md. It builds a run exactly as
``ssl-bench run`` does (same options: ``--protocol``, ``--method``, ``--method-opt``, ``--recipe``,
``--seed`` ...), trains the first phase through the harness's own loop (``engine.loop.train_phase``) and
evaluates the backbone after it with the protocol's evaluators, next to the same seed's random init.
Every ``--every`` steps it prints the training loss and, on a fixed batch of 256 training images (first
view at the protocol's first resolution), the mean pairwise cosine of the backbone features (``feat``)
and of the method's embedding (``emb``: ``Method.project``, what distillation matches), both in
training mode (batch statistics, as the loss sees them) on a copy of the model. ``emb`` near 1 means
every image gets the same embedding: the method has collapsed to a constant, or starts there.

    python benchmark/phase_check.py --protocol tinyimagenet-cpu --data-root ../shared/data/tiny-imagenet-100 \\
        --method dino [--method-opt use_bn=true] [--recipe lr=0.3] [--steps 120] [--no-eval]

``--steps N`` trains a first phase of N steps instead: its learning-rate schedule, S3L stages and momentum
schedule follow the shorter phase as they would any phase of that length. Nothing is written.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ssl_bench import cli, protocol
from ssl_bench.commands import _common
from ssl_bench.engine import evaluation
from ssl_bench.engine.build import Run
from ssl_bench.engine.loop import train_phase
from ssl_bench.plan import make_plan
from ssl_bench.registry import Registry

SUMMARY = ("linear/acc", "knn/acc", "collapse/rankme")


class _Bar:  # what train_phase expects of its tqdm bar; set_postfix comes after each copy of the losses
    def __init__(self, every: int, report):
        self.every, self.report, self.n, self.shown = every, report, 0, 0

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix(self, **_) -> None:  # every step on the CPU, every loop.LOG_EVERY steps on a GPU
        if self.n == 1 or self.n // self.every > self.shown // self.every:
            self.report(self.n)
            self.shown = self.n


def mean_cosine(x: torch.Tensor) -> float:
    """Mean pairwise cosine over the rows of ``x`` (diagonal excluded)."""
    z = F.normalize(x.flatten(1).float(), dim=1)
    n = len(z)
    return float(((z @ z.T).sum() - n) / (n * (n - 1)))


def main(argv: list[str] | None = None) -> dict:
    own = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    own.add_argument("--steps", type=int, default=0, help="a first phase of this many steps (0: the protocol's)")
    own.add_argument("--every", type=int, default=20, help="print the loss and cosines every N steps")
    own.add_argument("--no-eval", action="store_true", help="skip the evaluation after the phase")
    mine, rest = own.parse_known_args(argv)
    args = cli.build_parser().parse_args(["run", *rest])
    args.quiet = True
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    registry = Registry.discover(args.plugin)
    config = _common.run_config(
        args, registry, protocol.load(args.protocol), method=args.method, stream=args.stream, seed=args.seed
    )
    run = Run(make_plan(config, registry))
    first = run.phases[0]
    phase = type(first)(name=first.name, experiences=first.experiences, steps=mine.steps or first.steps)
    index = torch.as_tensor(np.asarray(run.experiences[0].train_idx[:256]))
    stages = run.protocol.train.stages
    seeded = torch.Generator(device=run.device).manual_seed(0)
    x = run.views(run.batch_of(index).images, stages[0].resolution if stages else None, seeded)[0]

    @torch.no_grad()
    def cosines() -> tuple[float, float]:  # in training mode, as the loss sees them, on a copy (BN statistics)
        m = copy.deepcopy(run.method).train()
        return mean_cosine(m.backbone(x)), mean_cosine(m.project(x))

    print(f"{config.protocol.label} {config.method} seed {config.seed}: {phase.steps} of {first.steps} steps of {first.name}")
    print(f"recipe {json.dumps(config.recipe, sort_keys=True)}")
    f0, e0 = cosines()
    print(f"{'step':>6} {'loss':>8} {'feat':>6} {'emb':>6}\n{0:>6} {'':>8} {f0:6.3f} {e0:6.3f}")

    def report(step: int) -> None:
        f, e = cosines()
        print(f"{step:>6} {run.losses[-1]:8.3f} {f:6.3f} {e:6.3f}", flush=True)

    init = {} if mine.no_eval else evaluation.evaluate(run, "phase", evaluation.features(run), None)
    t = time.time()
    train_phase(run, phase, _Bar(mine.every, report))
    out = {"steps": phase.steps, "train_s": round(time.time() - t, 1), "loss_last": run.losses[-1]}
    if not mine.no_eval:
        after = evaluation.evaluate(run, "phase", evaluation.features(run), None)
        for key in SUMMARY:
            if key in after:
                out[key], out[f"{key} init"] = float(np.mean(after[key])), float(np.mean(init[key]))
                print(f"{key:>16}: {out[key]:.4f} after the phase, {out[f'{key} init']:.4f} at random init")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
