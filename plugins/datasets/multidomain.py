"""Multi-domain image folders: ``root/<domain>/<class>/*`` (PACS, Office-Home, DomainNet), and DomainNet's split files.

``multidomain``: every sub-folder of ``root`` is a domain, every sub-folder of a domain a
class; classes are the union over domains (a class may be absent from a domain). A fixed
``test_fraction`` of every (domain, class) folder is held out, chosen by file name as in the
``imagefolder`` plugin (:func:`ssl_bench.blocks.imagefiles.split_held_out`).

``domainnet``: DomainNet's own split: ``root/<domain>_train.txt`` and ``root/<domain>_test.txt``
list ``<domain>/<class>/<file> <label>`` relative to ``root``; every domain with both files is used
(option ``domains`` picks some, in the given order).

Both take options ``domains`` and ``classes`` (lists of names) to use a subset, and
``on_corrupt`` (``"skip"``: skip and count undecodable files with a warning, the default; or
``"error"``). Images are decoded once into the uint8 cache (:mod:`ssl_bench.blocks.imagecache`).
"""

from pathlib import Path

from ssl_bench import hookimpl
from ssl_bench.api import Dataset
from ssl_bench.blocks import imagecache
from ssl_bench.blocks.imagefiles import check_fraction, class_folders, image_files, split_held_out
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Peng et al., Moment Matching for Multi-Source Domain Adaptation (DomainNet), ICCV 2019"

DOMAINNET_DOMAINS = ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]


def _subset(what: str, kind: str, found: list[str], wanted) -> list[str]:
    if wanted is None:
        return found
    if isinstance(wanted, str):
        wanted = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in found]
    if unknown:
        raise UserError(f"{what}: no {kind} '{unknown[0]}' (found: {', '.join(found[:12])}{', ...' if len(found) > 12 else ''})")
    return list(wanted)


def _dataset(name, root, resolution, domains, classes, files, on_corrupt):
    """``files[split]`` = list of (path, class index, domain index) -> Dataset."""
    sets = {}
    for split, rows in files.items():
        if not rows:
            raise UserError(f"{name}: no {split} images in {root}")
        paths, labels, doms = zip(*rows)
        sets[split] = imagecache.image_set(
            f"{name}/{root.name}/{split}", list(paths), labels, doms, root, resolution, on_corrupt=on_corrupt
        )
    return Dataset(name, sets["train"], sets["test"], classes=classes, domains=domains)


def multidomain(
    root=None, resolution=64, seed=0, download=False, test_fraction=0.2, domains=None, classes=None, on_corrupt="skip"
):
    """Images in ``root/<domain>/<class>/``."""
    if root is None:
        raise UserError("multidomain needs --data-root: a folder with one sub-folder per domain, each with one per class")
    if download:
        raise UserError("multidomain reads your own folders; there is nothing to --download")
    root = Path(root).expanduser()
    fraction = check_fraction("multidomain", test_fraction)
    domain_dirs = {p.name: p for p in class_folders(root, "multidomain")}
    domains = _subset("multidomain", "domain", list(domain_dirs), domains)
    per_domain = {d: {p.name: p for p in class_folders(domain_dirs[d], "multidomain")} for d in domains}
    classes = _subset("multidomain", "class", sorted({c for cs in per_domain.values() for c in cs}), classes)
    files = {"train": [], "test": []}
    for di, d in enumerate(domains):
        for ci, c in enumerate(classes):
            if c not in per_domain[d]:
                continue
            found = image_files(per_domain[d][c])
            if len(found) < 2:
                raise UserError(
                    f"multidomain: {per_domain[d][c]} has {len(found)} images; each class folder needs "
                    "at least 2 (one is held out)"
                )
            train, test = split_held_out(found, root, fraction)
            files["train"] += [(f, ci, di) for f in train]
            files["test"] += [(f, ci, di) for f in test]
    return _dataset("multidomain", root, resolution, domains, classes, files, on_corrupt)


def domainnet(root=None, resolution=64, seed=0, download=False, domains=None, classes=None, on_corrupt="skip"):
    """DomainNet from its split files ``<domain>_train.txt`` / ``<domain>_test.txt``."""
    where = "download the domain zips and split files from http://ai.bu.edu/M3SDA/ and unzip them into one folder"
    if root is None:
        raise UserError(f"domainnet needs --data-root; {where}")
    if download:
        raise UserError(f"domainnet cannot be downloaded by ssl-bench; {where}")
    root = Path(root).expanduser()
    found = [d for d in DOMAINNET_DOMAINS if (root / f"{d}_train.txt").is_file() and (root / f"{d}_test.txt").is_file()]
    found += sorted(
        p.name[: -len("_train.txt")]
        for p in root.glob("*_train.txt")
        if p.name[: -len("_train.txt")] not in found and (root / p.name.replace("_train.txt", "_test.txt")).is_file()
    )
    if not found:
        raise UserError(f"domainnet: no <domain>_train.txt with <domain>_test.txt in {root}; {where}")
    domains = _subset("domainnet", "domain", found, domains)
    rows = {"train": [], "test": []}
    names: dict[int, str] = {}
    for d in domains:
        for split in rows:
            listing = root / f"{d}_{split}.txt"
            for n, line in enumerate(listing.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.rsplit(maxsplit=1)
                try:
                    rel, label = parts[0], int(parts[1])
                except (IndexError, ValueError):
                    raise UserError(f"domainnet: {listing} line {n} is not '<path> <label>': '{line[:60]}'") from None
                segments = Path(rel).parts
                if len(segments) < 3:
                    raise UserError(f"domainnet: {listing} line {n}: expected <domain>/<class>/<file>, got '{rel}'")
                if names.setdefault(label, segments[-2]) != segments[-2]:
                    raise UserError(
                        f"domainnet: {listing} line {n}: label {label} is class '{names[label]}' elsewhere, not '{segments[-2]}'"
                    )
                rows[split].append((root / rel, label, d))
    all_classes = [names[k] for k in sorted(names)]
    classes = _subset("domainnet", "class", all_classes, classes)
    index = {c: i for i, c in enumerate(classes)}
    files = {
        split: [(p, index[names[label]], domains.index(d)) for p, label, d in r if names[label] in index]
        for split, r in rows.items()
    }
    missing = next((p for r in files.values() for p, _, _ in r if not p.is_file()), None)
    if missing is not None:
        raise UserError(f"domainnet: {missing} is listed in the split files but missing; unzip the domain's images into {root}")
    return _dataset("domainnet", root, resolution, domains, classes, files, on_corrupt)


@hookimpl
def ssl_bench_datasets():
    return {"multidomain": multidomain, "domainnet": domainnet}
