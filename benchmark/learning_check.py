"""Do the methods learn? Short pre-training of every method on real images, then a linear probe.

Not a test: a script whose numbers go into benchmark/RESULTS.md ("Do the methods learn?").
Each method trains the same backbone (ResNet-18, small stem) for the same number of steps on the
same images (a subset of Tiny ImageNet classes at 32 px), then a logistic-regression probe on the
frozen backbone's features is fitted on the training images and tested on the held-out ones.
Compared with the random-init backbone (no training; also with its BatchNorm statistics
recalibrated on the training images, a stronger baseline) and the supervised baseline (same budget,
cross-entropy with labels). Collapse is reported, not hidden: the standard deviation of the
L2-normalised backbone features and projector outputs (times sqrt(dim): about 1 when spread
out, 0 when collapsed, as in the SimSiam paper) and the effective rank of the backbone features.

    python benchmark/learning_check.py --data-root ../shared/data/tiny-imagenet-100           # CPU
    python benchmark/learning_check.py --data-root DIR --device cuda --width 1 --steps 2000   # a GPU
    python benchmark/learning_check.py --dataset synthetic --methods simclr,supervised       # built-in data
    python benchmark/learning_check.py --dataset synthetic --family cpu --methods dino,swav,mocov3,nnclr
    python benchmark/learning_check.py --dataset synthetic --backbone vit_tiny --backbone-opt patch_size=8 \
        --backbone-opt depth=6 --methods mae,dino,mocov3 --family vit                        # ViT methods

Head sizes and momentum settings are scaled down for a short CPU budget (listed in SETTINGS and
printed with the results); everything else is each method's default. With ``--family F`` a method
that ships a recipe for F (``Method.recipes[F]``, issue 14's contract) is trained with that recipe
instead: its optimiser (LARS without trust-ratio clipping: ``ssl_bench.engine.optim.LARS`` has none yet;
SGD; AdamW), its base learning rate scaled to the batch size, weight decay, warm-up epochs, schedule
and method options. ``--family vit`` uses VIT_RECIPES below (no shipped protocol has a ViT backbone).
Multi-crop methods get their declared views (``ssl_bench.blocks.augment.method_views``); the kNN accuracy
(k = 20, cosine, T = 0.07) is reported next to the probe.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ssl_bench.blocks import augment
from ssl_bench.blocks.probes import fit_predict
from ssl_bench.engine.optim import LARS
from ssl_bench.registry import Registry
from ssl_bench_plugins.evaluators.knn import knn_predict

#: per-method options for a short budget (smaller heads; faster momentum; a queue smaller than the data)
SETTINGS = {
    "simclr": {"proj_hidden": 512, "proj_dim": 128},
    "moco": {"proj_hidden": 512, "proj_dim": 128, "queue_size": 512, "momentum": 0.99},
    "byol": {"proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512, "base_momentum": 0.99},
    "simsiam": {"proj_hidden": 512, "proj_dim": 512, "pred_hidden": 128},
    "barlow": {"proj_hidden": 1024, "proj_dim": 1024},
    "vicreg": {"proj_hidden": 1024, "proj_dim": 1024},
    "supervised": {},
    "dino": {"out_dim": 1024, "hidden": 512, "bottleneck": 128, "momentum": 0.99, "n_local": 0},
    "swav": {"proj_hidden": 512, "n_prototypes": 100, "n_local": 0},
    "mocov3": {"proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512, "temperature": 0.2},
    "nnclr": {"proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512, "queue_size": 1024, "temperature": 0.2},
    "mae": {"decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4},
}

#: recipes for a ViT backbone on a short CPU budget, in the Method.recipes format. AdamW as every ViT
#: reference (DINO, MoCo v3, MAE); base learning rates (at batch 256) raised from the references'
#: 5e-4 (DINO), 1.5e-4 (MoCo v3, MAE) for a few hundred steps; betas and weight decay as the references.
_ADAMW = {
    "optimizer": "adamw",
    "lr_scaling": "linear",
    "momentum": 0.9,
    "lars_eta": 0.0,
    "lars_clip": False,
    "exclude_bias_norm": True,
    "warmup_epochs": 0.5,
    "schedule": "cosine",
}
VIT_RECIPES = {
    "dino": {
        **_ADAMW,
        "lr": 2e-3,
        "weight_decay": 0.04,
        "betas": [0.9, 0.999],
        "options": {
            "out_dim": 1024,
            "hidden": 512,
            "bottleneck": 128,
            "momentum": 0.99,
            "n_local": 4,
            "warmup_teacher_temp_epochs": 0.5,
            "freeze_last_layer": 0.5,
            "clip_grad": 3.0,
        },
    },
    "mocov3": {
        **_ADAMW,
        "lr": 2e-3,
        "weight_decay": 0.1,
        "betas": [0.9, 0.999],
        "options": {"proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512, "momentum": 0.99},
    },
    "mae": {
        **_ADAMW,
        "lr": 2e-3,
        "weight_decay": 0.05,
        "betas": [0.9, 0.95],
        "options": {"decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4},
    },
}


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", help="Tiny ImageNet folder (not needed with --dataset synthetic)")
    p.add_argument(
        "--dataset",
        default="tiny-imagenet",
        choices=["tiny-imagenet", "synthetic"],
        help="synthetic: the built-in generator (20 classes, 4 domains) instead of real images",
    )
    p.add_argument("--classes", type=int, default=10, help="first N classes of Tiny ImageNet")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=float, default=0.125, help="ResNet-18 width multiplier")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.5, help="LARS learning rate (peak of the cosine schedule)")
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--methods", default=",".join(SETTINGS))
    p.add_argument("--recipe", default="simclr", help="augmentation recipe, the same for every method")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paper-defaults", action="store_true", help="the methods' own defaults instead of SETTINGS")
    p.add_argument(
        "--family",
        help="train each method with its recipe for this protocol family (smoke, cpu, s3l; vit: VIT_RECIPES) when it has one",
    )
    p.add_argument("--backbone", default="resnet18", help="resnet18 (with --width) or vit_tiny / vit_small / vit_base")
    p.add_argument("--backbone-opt", action="append", default=[], help="KEY=VALUE option of a ViT backbone")
    p.add_argument("--seeds", help="comma-separated seeds (overrides --seed); the table gives the mean")
    p.add_argument(
        "--recipe-opt",
        action="append",
        default=[],
        help="KEY=VALUE over the --family recipe (e.g. lr=2.0; options.n_local=2 for a method option)",
    )
    p.add_argument("--out", default="benchmark/learning_check.json")
    args = p.parse_args()
    if args.dataset == "tiny-imagenet" and not args.data_root:
        p.error("--data-root is required for --dataset tiny-imagenet")
    return args


@torch.no_grad()
def embed(fn, images, device, resolution, bs=512):
    return torch.cat(
        [fn(augment.prepare(images[s : s + bs].to(device), resolution)).float().cpu() for s in range(0, len(images), bs)]
    )


def spread(z: torch.Tensor) -> float:
    """Mean over dimensions of the std of L2-normalised embeddings, times sqrt(dim) (1: spread, 0: collapsed)."""
    z = torch.nn.functional.normalize(z, dim=1)
    return float(z.std(0).mean() * math.sqrt(z.shape[1]))


def effective_rank(z: torch.Tensor) -> float:
    s = torch.linalg.svdvals(z - z.mean(0))
    p = s / s.sum()
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


def evaluate(method, backbone, ds, device, resolution):
    backbone.eval()
    ftr = embed(backbone, ds.train.images, device, resolution)
    fte = embed(backbone, ds.test.images, device, resolution)
    pred = fit_predict(ftr, ds.train.labels, fte)
    knn = knn_predict(ftr, ds.train.labels, fte, k=20)
    out = {
        "linear_acc": float((pred == ds.test.labels).float().mean()),
        "knn_acc": float((knn == ds.test.labels).float().mean()),
        "feature_spread": spread(fte),
        "feature_eff_rank": effective_rank(fte),
        "feature_dim": fte.shape[1],
    }
    if method is not None and hasattr(method, "projector"):
        method.eval()
        out["projector_spread"] = spread(embed(method.project, ds.test.images, device, resolution))
    return out


@torch.no_grad()
def recalibrate_bn(backbone, ds, device, resolution):
    """A stronger random baseline: random weights, BatchNorm statistics measured on the training images."""
    for m in backbone.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes below
    backbone.train()
    embed(backbone, ds.train.images, device, resolution)


def make_optimizer(method, recipe, args):
    """The recipe's optimiser and peak learning rate (base lr scaled to the batch size), or the script's LARS."""
    params = [p for p in method.parameters() if p.requires_grad]
    if recipe is None:
        return LARS(params, lr=args.lr, weight_decay=args.weight_decay), args.lr, max(1, args.steps // 10)
    scale = {"linear": args.batch_size / 256, "sqrt": math.sqrt(args.batch_size / 256), "none": 1.0}[recipe["lr_scaling"]]
    lr, wd = recipe["lr"] * scale, recipe["weight_decay"]
    if recipe.get("exclude_bias_norm") and recipe["optimizer"] != "lars":  # LARS here excludes 1-d parameters itself
        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": params, "weight_decay": wd}]
    if recipe["optimizer"] == "lars":
        opt = LARS(params, lr=lr, momentum=recipe["momentum"], weight_decay=wd, eta=recipe["lars_eta"])
    elif recipe["optimizer"] == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(recipe.get("betas", (0.9, 0.999))))
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=recipe["momentum"])
    steps_per_epoch = max(1, len_train(args) // args.batch_size)
    return opt, lr, int(recipe["warmup_epochs"] * steps_per_epoch)


def len_train(args):
    return args._n_train


def train(name, method, ds, args, device, recipe=None):
    gen = torch.Generator(device=device).manual_seed(args.seed)
    order = torch.Generator().manual_seed(args.seed)
    aug = augment.Augment(args.recipe)
    opt, peak, warmup = make_optimizer(method, recipe, args)
    constant = recipe is not None and recipe["schedule"] == "constant"
    images, labels = ds.train.images.to(device), ds.train.labels.to(device)
    losses, perm, pos = [], torch.randperm(len(images), generator=order), 0
    method.train()
    method.begin_phase(args.steps, max(1, len(images) // args.batch_size))
    for step in tqdm(range(args.steps), desc=name, unit="step", leave=False):
        if pos + args.batch_size > len(perm):
            perm, pos = torch.randperm(len(images), generator=order), 0
        idx = perm[pos : pos + args.batch_size].to(device)
        pos += args.batch_size
        if step < warmup:
            lr = peak * (step + 1) / warmup
        elif constant:
            lr = peak
        else:
            lr = peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr
        views = augment.method_views(aug, method, images[idx], args.resolution, gen)
        loss = method(views, labels[idx] if method.uses_labels else None)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        method.after_backward()
        opt.step()
        method.after_step((step + 1) / args.steps)
        losses.append(float(loss.detach()))
    return losses


def parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reg = Registry.discover()
    t0 = time.time()
    if args.dataset == "synthetic":
        ds = reg.get("dataset", "synthetic").factory(resolution=args.resolution, seed=0)
    else:
        ds = reg.get("dataset", "tiny-imagenet").factory(
            root=args.data_root, resolution=args.resolution, seed=0, download=False, n_classes=args.classes
        )
    args._n_train = len(ds.train)
    print(
        f"data: {len(ds.train)} train / {len(ds.test)} held-out images, {len(ds.classes)} classes, "
        f"{args.resolution} px ({time.time() - t0:.0f} s to load)"
    )
    make_backbone = reg.get("backbone", args.backbone).factory
    bb_opts = dict(kv.split("=", 1) for kv in args.backbone_opt)
    bb_opts = {k: parse_value(v) for k, v in bb_opts.items()}
    if args.backbone.startswith("resnet"):
        bb_opts = {"width": args.width, "small_stem": True, **bb_opts}
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]

    def backbone():
        torch.manual_seed(args.seed)
        return make_backbone(**bb_opts)

    runs: dict[str, list[dict]] = {}
    for seed in seeds:
        args.seed = seed
        bb = backbone().to(device)
        row = {**evaluate(None, bb, ds, device, args.resolution), "seconds": 0.0, "options": {}}
        runs.setdefault("random init", []).append(row)
        print("random init", seed, row)
        if args.backbone.startswith("resnet"):
            recalibrate_bn(bb, ds, device, args.resolution)
            row = {**evaluate(None, bb, ds, device, args.resolution), "seconds": 0.0, "options": {}}
            runs.setdefault("random init, BN recalibrated", []).append(row)
        for name in args.methods.split(","):
            factory = reg.get("method", name).factory
            recipe = None
            if args.family == "vit":
                recipe = VIT_RECIPES.get(name)
            elif args.family:
                recipe = getattr(factory, "recipes", {}).get(args.family)
            if recipe is not None and args.recipe_opt:
                recipe = {**recipe, "options": dict(recipe["options"])}
                for kv in args.recipe_opt:
                    key, value = kv.split("=", 1)
                    target = recipe["options"] if key.startswith("options.") else recipe
                    target[key.removeprefix("options.")] = parse_value(value)
            opts = {} if args.paper_defaults else dict(recipe["options"] if recipe else SETTINGS.get(name, {}))
            if name == "supervised":
                opts["n_classes"] = len(ds.classes)
            method = factory(backbone(), **opts).to(device)
            t, c = time.time(), time.process_time()
            try:
                losses = train(name, method, ds, args, device, recipe)
                nan = False
            except FloatingPointError as err:
                print(err)
                losses, nan = [float("nan")], True
            seconds, cpu = time.time() - t, time.process_time() - c
            row = evaluate(method, method.backbone, ds, device, args.resolution)
            row.update(
                seconds=round(seconds, 1),
                cpu_seconds=round(cpu, 1),
                options=opts,
                recipe=recipe,
                nan=nan,
                loss_first=float(np.mean(losses[:10])),
                loss_last=float(np.mean(losses[-10:])),
            )
            runs.setdefault(name, []).append(row)
            print(name, seed, row)
    rows = {}
    for name, rs in runs.items():
        row = dict(rs[0])
        for key in (
            "linear_acc",
            "knn_acc",
            "feature_spread",
            "feature_eff_rank",
            "projector_spread",
            "seconds",
            "cpu_seconds",
            "loss_first",
            "loss_last",
        ):
            if key in row:
                row[key] = float(np.mean([r[key] for r in rs]))
        row["per_seed"] = {k: [r[k] for r in rs] for k in ("linear_acc", "knn_acc", "feature_eff_rank")}
        row["nan"] = any(r.get("nan", False) for r in rs)
        rows[name] = row
    table = [
        "| method | linear probe acc | kNN acc | feature spread | feature eff. rank | projector spread | "
        "loss first→last 10 steps | train s (CPU s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        ps = f"{r['projector_spread']:.3f}" if "projector_spread" in r else "-"
        loss = f"{r['loss_first']:.3f} → {r['loss_last']:.3f}" if "loss_first" in r else "-"
        if r["nan"]:
            loss += " (NaN)"
        table.append(
            f"| {name} | {r['linear_acc']:.3f} | {r['knn_acc']:.3f} | {r['feature_spread']:.3f} | "
            f"{r['feature_eff_rank']:.1f} | {ps} | {loss} | {r['seconds']:.0f} ({r.get('cpu_seconds', 0):.0f}) |"
        )
    print("\n".join(table))
    meta = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    meta.update(
        seeds=seeds,
        backbone_options=bb_opts,
        n_train=len(ds.train),
        n_test=len(ds.test),
        torch=torch.__version__,
        total_seconds=round(time.time() - t0, 1),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": meta, "results": rows, "table": table}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
