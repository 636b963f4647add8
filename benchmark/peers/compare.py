"""ssl-bench next to lightly: SimCLR and BYOL trained by both on the same images, scored by the same kNN.

Issue 14, section 5. For every seed and method, ssl-bench trains its method through its own loop
(``ssl_bench.engine.loop.train_phase``: one joint phase over the whole training set) and lightly's
version (lightly's loss, heads, momentum utilities and transforms) trains a copy of the SAME initial
backbone, on the same images, in the same batch order, with the same LARS optimiser and schedule
(``ssl_bench.engine.optim``, built from the method's shipped recipe) and the same head sizes, temperature and
momentum (the recipe's options). Both frozen backbones are then scored by ssl-bench's ``knn``
evaluator on the same features (``ssl_bench.engine.evaluation.features``), and so is the shared initial
backbone (the "random init" row: how much each library learned). What differs, and why:
benchmark/peers/README.md.

    python benchmark/peers/compare.py --data-root ../shared/data/tiny-imagenet-100            # 3 seeds
    python benchmark/peers/compare.py --data-root DIR --steps 3 --seeds 0 --out runs/peers-tiny  # a check
    python benchmark/peers/compare.py --merge runs/peers-s0 runs/peers-s1 --out runs/peers      # seeds run apart
    python benchmark/peers/compare.py --data-root DIR --init-only --out runs/peers-init         # random init only

Writes ``peers.json`` (per-seed numbers) and ``peers.md`` (the table for benchmark/RESULTS.md and a
verdict per method) into ``--out``, and prints the table. Needs lightly: ``pip install -e ".[peers]"``.
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import ssl_bench
from ssl_bench import protocol
from ssl_bench.blocks import augment
from ssl_bench.blocks.augment import ViewSpec
from ssl_bench.engine import RunConfig, make_plan
from ssl_bench.engine.build import Run
from ssl_bench.engine.evaluation import features
from ssl_bench.engine.loop import phase_pool, schedule_of, train_phase
from ssl_bench.engine.optim import lr_at, make_optimizer, set_lr
from ssl_bench.errors import UserError
from ssl_bench.protocol import Protocol
from ssl_bench.registry import Registry

METHODS = ("simclr", "byol")
INIT = "random init"  #: the row of the initial backbone that both libraries start from
TOLERANCE = 2.0  #: accuracy points (percent) within which ssl-bench must match lightly (issue 14)


def require_lightly() -> str:
    """lightly's version, or exit with one line saying how to install it."""
    try:
        import lightly  # noqa: F401
    except ImportError:
        sys.exit('benchmark/peers/compare.py: lightly is not installed; install the peers extra: pip install -e ".[peers]"')
    return importlib.metadata.version("lightly")


def peer_protocol(base: Protocol) -> Protocol:
    """``base`` with one experience (the whole training set), no S3L stages (the dataset's resolution
    throughout), and only the ``knn`` evaluator, fitted on as many labelled training samples as ``base``
    uses over all its experiences and tested on all held-out images."""
    data = base.model_dump(mode="json")
    probe = base.eval.probe_train_per_experience * base.stream.n_experiences
    data.update(name=f"{base.name}-peers", description=f"{base.label}, one experience, fixed resolution, kNN only")
    data["stream"] = {"n_experiences": 1, "options": {}}
    data["train"]["stages"] = []
    knn = {"knn": base.eval.options["knn"]} if "knn" in base.eval.options else {}
    data["eval"].update(evaluators=["knn"], primary="knn", probe_train_per_experience=probe, options=knn)
    return Protocol.model_validate(data)


def joint_steps(run: Run, base: Protocol) -> int:
    """The steps of ``base``'s joint run: the sum of its experiences' steps (``Run.steps_per_experience``)."""
    stream = run.registry.get("stream", run.config.stream).factory
    experiences = stream(run.dataset, n_experiences=base.stream.n_experiences, seed=run.seed)
    tr = base.train
    return sum(max(1, math.ceil(tr.epochs_per_experience * len(e.train_idx) / tr.batch_size)) for e in experiences)


def build_run(peer: Protocol, method: str, seed: int, registry: Registry, data_root: str | None, device: str) -> Run:
    """ssl-bench's run of ``method`` under the peer protocol: joint strategy, the method's shipped recipe."""
    config = RunConfig(
        protocol=peer,
        method=method,
        stream="instance",
        strategy="joint",
        seed=seed,
        out=Path("."),  # nothing is written: the script keeps the run in memory
        data_root=data_root,
        device=device,
        progress=False,
    )
    return Run(make_plan(config, registry))


def batch_order(run: Run, steps: int) -> list[list[int]]:
    """The dataset indices of every step, drawn as ``train_phase`` draws them for the run's first phase."""
    pool, bs = phase_pool(run, run.phases[0]), run.protocol.train.batch_size
    order = torch.Generator().manual_seed(run.seed * 1_000_003)
    perm, pos, out = torch.randperm(len(pool), generator=order), 0, []
    for _ in range(steps):
        if pos + bs > len(perm):
            perm, pos = torch.randperm(len(pool), generator=order), 0
        out.append(pool[perm[pos : pos + min(bs, len(pool))]].tolist())
        pos += bs
    return out


def knn_accuracy(run: Run, backbone: nn.Module) -> dict[str, float]:
    """ssl-bench's kNN evaluator on ``backbone``'s frozen features of the run's probe and held-out images."""
    own = run.method.backbone
    run.method.backbone = backbone
    try:
        feats = features(run)
    finally:
        run.method.backbone = own
    (knn,) = run.evaluators
    return {key: float(np.mean(value)) for key, value in knn.evaluate(run, feats, None).items()}


# ------------------------------------------------------------------------------------------------ lightly
def lightly_view(spec: ViewSpec, size: int, byol_view: bool) -> dict[str, Any]:
    """Keyword arguments of a lightly view transform that draws the views ``spec`` describes."""
    if spec.scale[1] != 1.0 or not np.allclose(spec.ratio, (3 / 4, 4 / 3)):
        raise UserError("lightly's crops cover scale (min_scale, 1) at ratio (3/4, 4/3); the protocol's recipe differs")
    if spec.solarize_p and not byol_view:
        raise UserError("lightly's SimCLRTransform has no solarisation; the protocol's recipe asks for it")
    bright, contrast, sat, hue = spec.jitter
    args = dict(
        input_size=size,
        cj_prob=spec.jitter_p,
        cj_strength=1.0,
        cj_bright=bright,
        cj_contrast=contrast,
        cj_sat=sat,
        cj_hue=hue,
        min_scale=spec.scale[0],
        random_gray_scale=spec.gray_p,
        gaussian_blur=spec.blur_p,
        sigmas=spec.blur_sigma,
        hf_prob=spec.flip_p,
        normalize={"mean": augment.MEAN.tolist(), "std": augment.STD.tolist()},  # ssl-bench's input scale
    )
    return {**args, "solarization_prob": spec.solarize_p} if byol_view else args


def lightly_transform(method: str, specs: tuple[ViewSpec, ...], size: int) -> Any:
    """lightly's SimCLRTransform / BYOLTransform at ``size`` px, drawing the protocol's views."""
    from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, SimCLRTransform

    if method == "simclr":
        if len(set(specs)) > 1:
            raise UserError("the protocol's augmentation recipe has asymmetric views; lightly's SimCLRTransform has one")
        return SimCLRTransform(**lightly_view(specs[0], size, byol_view=False))
    view1, view2 = (lightly_view(specs[i % len(specs)], size, byol_view=True) for i in (0, 1))
    return BYOLTransform(BYOLView1Transform(**view1), BYOLView2Transform(**view2))


class LightlySimCLR(nn.Module):
    """lightly's SimCLR: backbone + SimCLRProjectionHead, NTXentLoss."""

    def __init__(self, backbone: nn.Module, dim: int, opts: dict[str, Any]):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(dim, opts["proj_hidden"], opts["proj_dim"])
        self.criterion = NTXentLoss(temperature=opts["temperature"])

    def before_step(self, step: int, steps: int) -> None:
        pass

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.projection_head(self.backbone(x0)), self.projection_head(self.backbone(x1)))


class LightlyBYOL(nn.Module):
    """lightly's BYOL: BYOLProjectionHead/BYOLPredictionHead, momentum copies updated by update_momentum with
    cosine_schedule before each step (as lightly's example), NegativeCosineSimilarity.

    The loss is scaled to ``2 - 2 cos`` summed over both directions (ssl-bench's and solo-learn's BYOL loss), not
    lightly's example ``0.5 * (-cos - cos)``: the recipe's learning rate is tuned to that scale, and biases and
    norms take plain SGD steps whose size scales with the loss (4x here)."""

    def __init__(self, backbone: nn.Module, dim: int, opts: dict[str, Any]):
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(dim, opts["proj_hidden"], opts["proj_dim"])
        self.prediction_head = BYOLPredictionHead(opts["proj_dim"], opts["pred_hidden"], opts["proj_dim"])
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.momentum = (opts["base_momentum"], opts["final_momentum"])
        self.criterion = NegativeCosineSimilarity()

    @torch.no_grad()
    def before_step(self, step: int, steps: int) -> None:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        m = cosine_schedule(step, steps, *self.momentum)
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        p0, p1 = (self.prediction_head(self.projection_head(self.backbone(x))) for x in (x0, x1))
        with torch.no_grad():
            z0, z1 = (self.projection_head_momentum(self.backbone_momentum(x)).detach() for x in (x0, x1))
        return 4 + 2 * (self.criterion(p0, z1) + self.criterion(p1, z0))


class Views(torch.utils.data.Dataset):
    """The run's uint8 training images as PIL images through a lightly transform (per image, as lightly does)."""

    def __init__(self, images: torch.Tensor, transform: Any):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        from PIL import Image

        return self.transform(Image.fromarray(np.ascontiguousarray(self.images[i].permute(1, 2, 0).numpy())))


def method_options(run: Run) -> dict[str, Any]:
    """The method's options: its factory's defaults under the recipe's ``options``."""
    import inspect

    params = inspect.signature(type(run.method).__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {**defaults, **run.recipe.options}


def train_lightly(run: Run, backbone: nn.Module, steps: int, workers: int, progress: bool) -> tuple[float, float]:
    """Train lightly's version of ``run``'s method on ``backbone``; returns (seconds, last loss)."""
    name = run.config.method
    torch.manual_seed(run.seed)
    random.seed(run.seed)
    np.random.seed(run.seed)
    cls = {"simclr": LightlySimCLR, "byol": LightlyBYOL}[name]
    model = cls(backbone, run.method.feature_dim, method_options(run)).to(run.device)
    optimizer = make_optimizer(model, run.recipe)  # the recipe's LARS, parameter groups as ssl-bench's
    _, total, warmup = schedule_of(run, run.phases[0])  # one phase: (0, steps, the recipe's warm-up steps)
    transform = lightly_transform(name, run.augment.specs, run.dataset.resolution)
    loader = torch.utils.data.DataLoader(
        Views(run.dataset.train.images, transform), batch_sampler=batch_order(run, steps), num_workers=workers
    )
    model.train()
    loss = torch.zeros(())
    t0 = time.perf_counter()
    for k, (x0, x1) in enumerate(tqdm(loader, total=steps, desc=f"lightly {name}", disable=not progress)):
        set_lr(optimizer, lr_at(k, total, warmup, run.peak_lr, run.recipe.schedule), run.peak_lr)
        model.before_step(k, steps)
        loss = model.loss(x0.to(run.device), x1.to(run.device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"lightly {name}: loss became {loss.item()} at step {k}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0, float(loss.detach())


# ------------------------------------------------------------------------------------------------ the comparison
def compare(
    base: Protocol,
    methods: list[str],
    seeds: list[int],
    steps: int | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    workers: int = 0,
    progress: bool = False,
    init_only: bool = False,
) -> dict[str, Any]:
    """Per seed and method, the shared random-init backbone, then ssl-bench, then lightly: kNN accuracy, seconds
    per step. ``steps``: ``base``'s joint step count when None. ``init_only``: score the random-init backbones
    only (their rows can be merged into a comparison that was run without them)."""
    peer = peer_protocol(base)
    registry = Registry.discover([])
    rows, recipes = [], {}
    for seed in seeds:
        for method in methods:
            run = build_run(peer, method, seed, registry, data_root, device)
            n = steps or joint_steps(run, base)
            run.phases = [dataclasses.replace(run.phases[0], steps=n)]
            run.total_steps, run.phase_index = n, 0
            recipes[method] = run.recipe.to_json()
            init = copy.deepcopy(run.method.backbone)  # lightly starts from the same weights
            rows.append(_row(method, INIT, seed, n, 0.0, None, knn_accuracy(run, init)))
            if init_only:
                continue

            with tqdm(total=n, desc=f"ssl-bench {method} seed {seed}", disable=not progress) as bar:
                t0 = time.perf_counter()
                train_phase(run, run.phases[0], bar)
                seconds = time.perf_counter() - t0
            rows.append(_row(method, "ssl-bench", seed, n, seconds, run.losses[-1], knn_accuracy(run, run.method.backbone)))

            seconds, last = train_lightly(run, init, n, workers, progress)
            rows.append(_row(method, "lightly", seed, n, seconds, last, knn_accuracy(run, init)))
            for r in rows[-3:]:
                per_step = "" if r["s_per_step"] is None else f", {r['s_per_step']:.3f} s/step"
                print(f"seed {seed} {method:6s} {r['library']:11s}: kNN {100 * r['knn_acc']:.2f}%{per_step}", file=sys.stderr)
    return {
        "base_protocol": base.label,
        "base_protocol_hash": base.hash,
        "peer_protocol": peer.model_dump(mode="json"),
        "peer_protocol_hash": peer.hash,
        "recipes": recipes,
        "versions": {
            "ssl_bench": ssl_bench.__version__,
            "lightly": importlib.metadata.version("lightly"),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "threads": torch.get_num_threads(),
        "device": device,
        "workers": workers,
        "rows": rows,
    }


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several runs of this script (e.g. one per core, each with its own seeds): their rows
    side by side. They must share the peer protocol, the recipes and the library versions, and no
    (method, library, seed) may appear twice."""
    first = results[0]
    recipes: dict[str, Any] = {}
    for r in results:
        differ = [key for key in ("peer_protocol_hash", "versions", "device") if r[key] != first[key]]
        differ += ["recipes"] if any(recipes.setdefault(m, rec) != rec for m, rec in r["recipes"].items()) else []
        if differ:
            raise UserError(f"cannot merge runs with different {differ[0]}: rerun them with the same checkout and options")
    rows = [row for r in results for row in r["rows"]]
    counts = collections.Counter((row["method"], row["library"], row["seed"]) for row in rows)
    twice = sorted(k for k, n in counts.items() if n > 1)
    if twice:
        raise UserError(f"cannot merge: {twice[0][0]} seed {twice[0][2]} ({twice[0][1]}) is in more than one run")
    merged = dict(first)
    merged.update(
        recipes=recipes,
        rows=rows,
        command=" && ".join(r.get("command", "?") for r in results),
        wall_s=sum(r.get("wall_s", 0.0) for r in results),
        merged_from=len(results),
    )
    return merged


def _row(method: str, library: str, seed: int, steps: int, seconds: float, loss: float | None, knn: dict[str, float]) -> dict:
    """One row of the table; the random-init row has no time per step and no loss (None)."""
    extra = {f"knn_{k}": v for k, v in knn.items() if k != "acc"}
    return dict(
        method=method,
        library=library,
        seed=seed,
        steps=steps,
        knn_acc=knn["acc"],
        **extra,
        train_s=seconds,
        s_per_step=seconds / steps if library != INIT else None,
        final_loss=loss,
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def table(result: dict[str, Any]) -> str:
    """The markdown table (kNN accuracy in percent, mean ± std over seeds) and a verdict per method."""
    rows = result["rows"]
    k = result["peer_protocol"]["eval"]["options"].get("knn", {}).get("k", 20)
    k = k if isinstance(k, int) else k[0]
    seeds = sorted({r["seed"] for r in rows})
    steps = sorted({r["steps"] for r in rows})
    lines = [
        f"| method | library | kNN acc (k={k}, %) | s/step |",
        "|---|---|---|---|",
    ]
    means: dict[tuple[str, str], float] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        for library in (INIT, "ssl-bench", "lightly"):
            sel = [r for r in rows if r["method"] == method and r["library"] == library]
            if not sel:
                continue
            acc, sd = _mean_std([100 * r["knn_acc"] for r in sel])
            means[method, library] = acc
            times = [r["s_per_step"] for r in sel if r["s_per_step"] is not None]
            per_step = f"{np.mean(times):.3f}" if times else "-"
            lines.append(f"| {method} | {library} | {acc:.1f} ± {sd:.1f} | {per_step} |")
    lines += [
        "",
        f"{result['base_protocol']} images, joint, {'/'.join(map(str, steps))} steps, seeds {','.join(map(str, seeds))}; "
        f"lightly {result['versions']['lightly']}, torch {result['versions']['torch']}, {result['device']}, "
        f"{result['threads']} thread(s), {result['workers']} loader worker(s).",
        "",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        if (method, "ssl-bench") in means and (method, "lightly") in means:
            ours, theirs = means[method, "ssl-bench"], means[method, "lightly"]
            gap = ours - theirs
            verdict = "within" if abs(gap) <= TOLERANCE else ("NOT within (ssl-bench higher)" if gap > 0 else "NOT within")
            start = f"; random init {means[method, INIT]:.1f}" if (method, INIT) in means else ""
            lines.append(
                f"- {method}: ssl-bench {ours:.1f} vs lightly {theirs:.1f} ({gap:+.1f} points): {verdict} {TOLERANCE:g} points"
                f"{start}."
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", default="tinyimagenet-cpu", help="the protocol whose images, backbone, budget are used")
    parser.add_argument("--data-root", help="the dataset folder (tinyimagenet-cpu: ../shared/data/tiny-imagenet-100)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of: simclr, byol")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, help="training steps (default: the protocol's joint run's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for lightly's per-image transforms")
    parser.add_argument("--out", type=Path, default=Path("runs/peers"), help="folder for peers.json and peers.md")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--merge", nargs="+", type=Path, metavar="DIR", help="train nothing: merge these folders' peers.json into --out"
    )
    parser.add_argument(
        "--init-only", action="store_true", help="train nothing: score each seed's random-init backbone (to --merge later)"
    )
    args = parser.parse_args(argv)
    if args.merge:
        try:
            result = merge([json.loads((d / "peers.json").read_text()) for d in args.merge])
        except (OSError, ValueError, KeyError) as err:
            sys.exit(f"benchmark/peers/compare.py: error: --merge needs folders with a peers.json from this script ({err})")
        except UserError as err:
            sys.exit(f"benchmark/peers/compare.py: error: {err}")
        return write(result, args.out)
    require_lightly()
    methods = [m for m in args.methods.split(",") if m]
    if not methods or any(m not in METHODS for m in methods):
        parser.error(f"--methods: choose from {', '.join(METHODS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error("--seeds: comma-separated integers, e.g. 0,1,2")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    t0 = time.time()
    try:
        base = protocol.load(args.protocol)
        result = compare(
            base, methods, seeds, args.steps, args.data_root, args.device, args.workers, not args.quiet, args.init_only
        )
    except UserError as err:
        sys.exit(f"benchmark/peers/compare.py: error: {err}")
    result.update(command=" ".join(sys.argv), wall_s=time.time() - t0, omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
    return write(result, args.out)


def write(result: dict[str, Any], out: Path) -> int:
    """Write ``peers.json`` and ``peers.md`` into ``out`` and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(result, indent=1) + "\n")
    md = table(result)
    (out / "peers.md").write_text(md)
    print(md, end="")
    print(f"wrote {out / 'peers.json'}, {out / 'peers.md'} ({result['wall_s']:.0f} s of runs)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
