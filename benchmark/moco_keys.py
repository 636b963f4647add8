"""Why MoCo learns slowly under a short budget: how similar its queries, keys and queue are, step by step.

Not a test: a diagnostic whose numbers go into benchmark/RESULTS.md (the CPU protocol's MoCo row).
It trains MoCo with its shipped recipe's head, queue and momentum (``--family``, default ``cpu``) on
real images at the S3L low resolution, with plain SGD at the recipe's peak learning rate, and every
``--every`` steps prints, on the current batch:

* ``pos``: mean cosine of a query with its own key (the positive);
* ``neg``: mean cosine of a query with the queue's entries (the negatives);
* ``qq`` / ``kk``: mean pairwise cosine of the batch's queries / keys (1 = every image gets the same
  output, i.e. collapsed to a constant);
* ``key-queue``: mean cosine of the batch's keys with the queue.

    python benchmark/moco_keys.py --data-root ../shared/data/tiny-imagenet-100 --steps 160
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from ssl_bench.blocks import augment
from ssl_bench.recipe import Recipe
from ssl_bench.registry import Registry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--family", default="cpu")
    p.add_argument("--steps", type=int, default=160)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    reg = Registry.discover()
    factory = reg.get("method", "moco").factory
    recipe = Recipe.model_validate(factory.recipes[a.family])
    backbone = reg.get("backbone", "resnet18").factory(width=0.25, small_stem=True)
    m = factory(backbone, **recipe.options)
    opt = torch.optim.SGD(
        [q for q in m.parameters() if q.requires_grad],
        lr=recipe.peak_lr(a.batch_size),
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    data = reg.get("dataset", "tiny-imagenet").factory(root=a.data_root, resolution=32, seed=0, train_per_class=30)
    images, aug, g = data.train.images, augment.Augment("simclr"), torch.Generator().manual_seed(a.seed + 1)
    print(f"moco, '{a.family}' recipe options {recipe.options}, lr {recipe.peak_lr(a.batch_size):g}")
    m.train()
    for step in range(a.steps + 1):
        views = aug(images[torch.randint(len(images), (a.batch_size,), generator=g)], 2, a.resolution, g)
        loss = m(views, None)
        if step % a.every == 0:
            with torch.no_grad():
                q = F.normalize(m.projector(m.backbone(views[0])), dim=1)
                k = m._keys(views[1])
                print(
                    f"step {step:4d}  loss {loss.item():.3f}  pos {(q * k).sum(1).mean():.3f}  "
                    f"neg {(q @ m.queue.T).mean():.3f}  qq {(q @ q.T).mean():.3f}  kk {(k @ k.T).mean():.3f}  "
                    f"key-queue {(k @ m.queue.T).mean():.3f}",
                    flush=True,
                )
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_step(step / a.steps)


if __name__ == "__main__":
    main()
