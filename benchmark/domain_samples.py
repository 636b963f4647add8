"""The four transform-made domains (ssl_bench.blocks.domain_transforms) on a few Tiny ImageNet images.

    python benchmark/domain_samples.py [--data-root ../shared/data/tiny-imagenet-100] [--resolution 64] [-o PNG]

Takes the first training image of the first six classes (sorted wnids), renders each in every
domain at the given resolution, and writes one grid (rows: domains) as benchmark/domain_samples.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ssl_bench.blocks import domain_transforms, imagecache  # noqa: E402


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=here.parent.parent / "shared" / "data" / "tiny-imagenet-100")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--n", type=int, default=6, help="images (one per class)")
    parser.add_argument("-o", "--output", type=Path, default=here / "domain_samples.png")
    args = parser.parse_args()
    wnids = sorted(p.name for p in (args.data_root / "train").iterdir())[: args.n]
    files = [sorted((args.data_root / "train" / w / "images").glob("*"))[0] for w in wnids]
    images = torch.stack([torch.from_numpy(imagecache.decode(f, args.resolution).copy()) for f in files])
    fig, axes = plt.subplots(
        len(domain_transforms.DOMAINS), len(files), figsize=(1.3 * len(files), 5.4), squeeze=False, layout="constrained"
    )
    for i, name in enumerate(domain_transforms.DOMAINS):
        rendered = domain_transforms.TRANSFORMS[name](images)
        for j in range(len(files)):
            ax = axes[i][j]
            ax.imshow(rendered[j].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name)
            if i == 0:
                ax.set_title(wnids[j], fontsize=7)
    fig.savefig(args.output, dpi=110, metadata={"Software": None})
    print(args.output)


if __name__ == "__main__":
    main()
