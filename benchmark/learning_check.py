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

Head sizes and momentum settings are scaled down for a short CPU budget (listed in SETTINGS and
printed with the results); everything else is each method's default.
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

from ssl_bench import augment
from ssl_bench.optim import LARS
from ssl_bench.probes import fit_predict
from ssl_bench.registry import Registry

#: per-method options for a short budget (smaller heads; faster momentum; a queue smaller than the data)
SETTINGS = {
    "simclr": {"proj_hidden": 512, "proj_dim": 128},
    "moco": {"proj_hidden": 512, "proj_dim": 128, "queue_size": 512, "momentum": 0.99},
    "byol": {"proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512, "base_momentum": 0.99},
    "simsiam": {"proj_hidden": 512, "proj_dim": 512, "pred_hidden": 128},
    "barlow": {"proj_hidden": 1024, "proj_dim": 1024},
    "vicreg": {"proj_hidden": 1024, "proj_dim": 1024},
    "supervised": {},
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
    out = {
        "linear_acc": float((pred == ds.test.labels).float().mean()),
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


def train(name, method, ds, args, device):
    gen = torch.Generator(device=device).manual_seed(args.seed)
    order = torch.Generator().manual_seed(args.seed)
    aug = augment.Augment(args.recipe)
    params = [p for p in method.parameters() if p.requires_grad]
    opt = LARS(params, lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, args.steps // 10)
    images, labels = ds.train.images.to(device), ds.train.labels.to(device)
    losses, perm, pos = [], torch.randperm(len(images), generator=order), 0
    method.train()
    for step in tqdm(range(args.steps), desc=name, unit="step", leave=False):
        if pos + args.batch_size > len(perm):
            perm, pos = torch.randperm(len(images), generator=order), 0
        idx = perm[pos : pos + args.batch_size].to(device)
        pos += args.batch_size
        lr = (
            args.lr * (step + 1) / warmup
            if step < warmup
            else args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (args.steps - warmup)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        views = aug(images[idx], method.n_views, args.resolution, gen)
        loss = method(views, labels[idx] if method.uses_labels else None)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step((step + 1) / args.steps)
        losses.append(float(loss.detach()))
    return losses


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
    print(
        f"data: {len(ds.train)} train / {len(ds.test)} held-out images, {len(ds.classes)} classes, "
        f"{args.resolution} px ({time.time() - t0:.0f} s to load)"
    )
    make_backbone = reg.get("backbone", "resnet18").factory

    def backbone():
        torch.manual_seed(args.seed)
        return make_backbone(width=args.width, small_stem=True)

    rows = {}
    bb = backbone().to(device)
    rows["random init"] = {**evaluate(None, bb, ds, device, args.resolution), "seconds": 0.0, "options": {}}
    print("random init", rows["random init"])
    recalibrate_bn(bb, ds, device, args.resolution)
    rows["random init, BN recalibrated"] = {**evaluate(None, bb, ds, device, args.resolution), "seconds": 0.0, "options": {}}
    print("random init, BN recalibrated", rows["random init, BN recalibrated"])
    for name in args.methods.split(","):
        opts = {} if args.paper_defaults else dict(SETTINGS.get(name, {}))
        if name == "supervised":
            opts["n_classes"] = len(ds.classes)
        method = reg.get("method", name).factory(backbone(), **opts).to(device)
        t, c = time.time(), time.process_time()
        losses = train(name, method, ds, args, device)
        seconds, cpu = time.time() - t, time.process_time() - c
        row = evaluate(method, method.backbone, ds, device, args.resolution)
        row.update(
            seconds=round(seconds, 1),
            cpu_seconds=round(cpu, 1),
            options=opts,
            loss_first=float(np.mean(losses[:10])),
            loss_last=float(np.mean(losses[-10:])),
        )
        rows[name] = row
        print(name, row)
    table = [
        "| method | linear probe acc | feature spread | feature eff. rank | projector spread "
        "| loss first→last 10 steps | train s (CPU s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        ps = f"{r['projector_spread']:.3f}" if "projector_spread" in r else "-"
        loss = f"{r['loss_first']:.3f} → {r['loss_last']:.3f}" if "loss_first" in r else "-"
        table.append(
            f"| {name} | {r['linear_acc']:.3f} | {r['feature_spread']:.3f} | {r['feature_eff_rank']:.1f} | "
            f"{ps} | {loss} | {r['seconds']:.0f} ({r.get('cpu_seconds', 0):.0f}) |"
        )
    print("\n".join(table))
    meta = {k: v for k, v in vars(args).items()}
    meta.update(n_train=len(ds.train), n_test=len(ds.test), torch=torch.__version__, total_seconds=round(time.time() - t0, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": meta, "results": rows, "table": table}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
