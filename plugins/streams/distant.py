"""Distant class-incremental stream: classes grouped so that experiences are semantically far apart.

Classes that are close (same super-class) go to the same experience, so consecutive
experiences differ as much as the data allows (Hu et al., ICLR 2022, split ImageNet by the
WordNet hierarchy). The distance between two classes comes from, in this order (option
``source`` forces one):

1. ``hierarchy``: the dataset's own hierarchy (``Dataset.hierarchy``: class -> ancestors,
   nearest first), as the number of edges between the two classes through their nearest
   common ancestor (classes without a common ancestor are one edge further than the longest path);
2. ``wordnet``: when every class id is a WordNet noun id (``n01443537``: the noun synset at
   offset 01443537 of WordNet 3.0, as in ImageNet and Tiny ImageNet), the same path length in
   WordNet's hypernym graph, read from a WordNet 3.0 ``data.noun`` file on disk: option
   ``wordnet`` or ``$SSL_BENCH_WORDNET`` (a file or a folder holding it), else the places
   Debian's ``wordnet-base`` package and NLTK's ``wordnet`` corpus put it;
3. ``features``: cosine distance between class means of standardised features of a fixed network (a
   3-layer convolutional network with weights drawn from a fixed seed, never trained), on up to
   64 training images per class.

Classes are then ordered by average-linkage agglomerative clustering, cut into ``T``
contiguous groups of (nearly) equal size, and improved by swapping classes between groups
while that lowers the total within-group distance. The seed permutes the classes first (ties
go differently) and shuffles the order of the experiences.

Every experience records in ``Experience.info`` (and so in the result file):
``intra_distance`` (mean distance between its own classes), ``inter_distance`` (mean distance
from its classes to the other experiences' classes), ``mean_intra_distance`` and
``mean_inter_distance`` (over all class pairs within the same / different experiences: the
headline "how distant is this split"), and ``distance_source``.
"""

import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ssl_bench import hookimpl
from ssl_bench.blocks.class_groups import check_n_experiences, class_experiences
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"

log = logging.getLogger(__name__)

WNID = re.compile(r"^n(\d{8})$")
WORDNET_PLACES = [
    "/usr/share/wordnet/data.noun",
    "/usr/share/wordnet/dict/data.noun",
    "~/nltk_data/corpora/wordnet/data.noun",
    "/usr/share/nltk_data/corpora/wordnet/data.noun",
    "/usr/local/share/nltk_data/corpora/wordnet/data.noun",
]


# ------------------------------------------------------------------ distances from a tree
def _path_distances(ancestors: list[dict[str, int]]) -> np.ndarray:
    """Pairwise path length through the nearest common ancestor; ``ancestors[i]``: node -> edges up from class i."""
    n = len(ancestors)
    far = 2 * max(max(a.values()) for a in ancestors) + 1
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            a, b = ancestors[i], ancestors[j]
            if len(b) < len(a):
                a, b = b, a
            common = [a[k] + b[k] for k in a if k in b]
            D[i, j] = D[j, i] = min(common) if common else far
    return D


def hierarchy_distances(classes: list[str], hierarchy: dict[str, list[str]]) -> np.ndarray:
    missing = [c for c in classes if c not in hierarchy]
    if missing:
        raise UserError(f"distant stream: class '{missing[0]}' is not in the dataset's hierarchy")
    ancestors = []
    for c in classes:
        up = {c: 0}
        for depth, node in enumerate(hierarchy[c], start=1):
            up.setdefault(node, depth)
        ancestors.append(up)
    return _path_distances(ancestors)


def find_wordnet(path=None) -> Path:
    """The WordNet 3.0 ``data.noun`` to use; a one-line error saying what to install when there is none."""
    given = path or os.environ.get("SSL_BENCH_WORDNET")
    candidates = [given] if given else WORDNET_PLACES
    for place in candidates:
        p = Path(place).expanduser()
        if p.is_dir():
            p = p / "data.noun"
        if p.is_file():
            return p
    if given:
        raise UserError(
            f"distant stream: no WordNet data.noun at {given}; point the 'wordnet' option or "
            "SSL_BENCH_WORDNET at WordNet 3.0's data.noun (or its folder)"
        )
    raise UserError(
        "distant stream: the class ids are WordNet ids but no WordNet 3.0 database was found; "
        "run `apt-get install wordnet-base` or set the stream option wordnet=PATH/data.noun "
        "(or $SSL_BENCH_WORDNET)"
    )


def read_wordnet(path: Path) -> dict[str, list[str]]:
    """Noun synset offset -> offsets of its hypernyms (``@``) and instance hypernyms (``@i``), from ``data.noun``."""
    parents: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" ") or not line.strip():
                continue  # the licence header lines start with two spaces
            fields = line.split(" | ", 1)[0].split()
            try:
                n_words = int(fields[3], 16)
                at = 4 + 2 * n_words
                n_ptrs = int(fields[at])
                ptrs = [fields[at + 1 + 4 * k : at + 5 + 4 * k] for k in range(n_ptrs)]
            except (IndexError, ValueError):
                raise UserError(
                    f"distant stream: {path} is not a WordNet data.noun file (cannot read line '{line[:40].strip()}')"
                ) from None
            parents[fields[0]] = [p[1] for p in ptrs if p[0] in ("@", "@i") and p[2] == "n"]
    if not parents:
        raise UserError(f"distant stream: {path} holds no WordNet noun synsets")
    return parents


def wordnet_distances(classes: list[str], wordnet=None) -> np.ndarray:
    path = find_wordnet(wordnet)
    parents = read_wordnet(path)
    ancestors = []
    for c in classes:
        offset = WNID.match(c).group(1)
        if offset not in parents:
            raise UserError(f"distant stream: class {c} is not a noun synset in {path}; is it WordNet 3.0?")
        up, frontier, depth = {offset: 0}, [offset], 0
        while frontier:  # breadth first: the fewest edges up to every ancestor
            depth += 1
            frontier = [p for node in frontier for p in parents.get(node, []) if p not in up]
            for p in frontier:
                up.setdefault(p, depth)
        ancestors.append(up)
    return _path_distances(ancestors)


# ------------------------------------------------------------------ distances from features
def _fixed_network() -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
    return net.eval()


@torch.no_grad()
def feature_distances(dataset, per_class: int = 64) -> np.ndarray:
    net = _fixed_network()
    labels = dataset.train.labels.numpy()
    rng = np.random.default_rng(0)
    feats = []
    for c in range(len(dataset.classes)):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            raise UserError(f"class '{dataset.classes[c]}' has no training images in dataset {dataset.name}")
        idx = np.sort(rng.choice(idx, min(per_class, len(idx)), replace=False))
        feats.append(net(dataset.train.images[torch.from_numpy(idx)].float() / 255 - 0.5))
    every = torch.cat(feats)
    mu, sd = every.mean(0), every.std(0) + 1e-6  # standardise: distances between what varies across images
    m = nn.functional.normalize(torch.stack([((f - mu) / sd).mean(0) for f in feats]), dim=1)
    return (1 - m @ m.T).clamp_min(0).fill_diagonal_(0).double().numpy()


# ------------------------------------------------------------------ grouping
def _leaf_order(D: np.ndarray) -> list[int]:
    """Leaves in the order of an average-linkage agglomerative clustering of distance matrix ``D``."""
    n = len(D)
    M = D.astype(float).copy()
    np.fill_diagonal(M, np.inf)
    members = {i: [i] for i in range(n)}
    for _ in range(n - 1):
        a, b = np.unravel_index(np.argmin(M), M.shape)
        a, b = min(a, b), max(a, b)
        na, nb = len(members[a]), len(members[b])
        row = (na * M[a] + nb * M[b]) / (na + nb)
        M[a], M[:, a] = row, row
        M[a, a] = np.inf
        M[b], M[:, b] = np.inf, np.inf
        members[a] = members[a] + members.pop(b)
    return next(iter(members.values()))


def group_classes(D: np.ndarray, n_groups: int, seed: int) -> list[list[int]]:
    """Split classes into ``n_groups`` groups of (nearly) equal size with small within-group distance."""
    n = len(D)
    perm = np.random.default_rng(seed).permutation(n)
    Dp = D[np.ix_(perm, perm)]
    order = _leaf_order(Dp)
    assign = np.empty(n, dtype=int)
    for g, chunk in enumerate(np.array_split(np.array(order), n_groups)):
        assign[chunk] = g
    for _ in range(10 * n):  # best improving swap between two groups, until none improves
        S = Dp @ np.eye(n_groups)[assign]  # S[x, g]: sum of distances from x to the members of group g
        own = S[np.arange(n), assign]
        X = S[:, assign]  # X[x, i] = S[x, g_i]
        # swapping i and j changes the within-group sum by S[j,g_i] - S[i,g_i] + S[i,g_j] - S[j,g_j] - 2 D[i,j]
        delta = X.T - own[:, None] + X - own[None, :] - 2 * Dp
        delta[assign[:, None] == assign[None, :]] = np.inf
        i, j = np.unravel_index(np.argmin(delta), delta.shape)
        if delta[i, j] >= -1e-9:
            break
        assign[i], assign[j] = assign[j], assign[i]
    groups = [sorted(perm[np.flatnonzero(assign == g)].tolist()) for g in range(n_groups)]
    rng = np.random.default_rng(seed + 1)
    return [[int(x) for x in rng.permutation(g)] for g in (groups[k] for k in rng.permutation(n_groups))]


def split_distances(D: np.ndarray, groups: list[list[int]]) -> tuple[float, float]:
    """Mean class distance over pairs in the same group, and over pairs in different groups."""
    assign = np.empty(len(D), dtype=int)
    for g, members in enumerate(groups):
        assign[members] = g
    same = assign[:, None] == assign[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    intra, inter = D[same & upper], D[~same & upper]
    return (float(intra.mean()) if intra.size else 0.0, float(inter.mean()) if inter.size else 0.0)


def class_distances(dataset, source: str = "auto", wordnet=None) -> tuple[np.ndarray, str]:
    """The class distance matrix and where it came from."""
    if source not in ("auto", "hierarchy", "wordnet", "features"):
        raise UserError(f"distant stream: source must be auto, hierarchy, wordnet or features, not '{source}'")
    if source == "hierarchy" or (source == "auto" and dataset.hierarchy):
        if not dataset.hierarchy:
            raise UserError(f"distant stream: dataset {dataset.name} has no hierarchy; use source=wordnet or features")
        return hierarchy_distances(dataset.classes, dataset.hierarchy), "hierarchy"
    is_wnid = all(WNID.match(c) for c in dataset.classes)
    if source == "wordnet" or (source == "auto" and is_wnid):
        if not is_wnid:
            bad = next(c for c in dataset.classes if not WNID.match(c))
            raise UserError(f"distant stream: class id '{bad}' is not a WordNet noun id like n01443537; use source=features")
        return wordnet_distances(dataset.classes, wordnet), "wordnet"
    return feature_distances(dataset), "features"


def distant_class_incremental(dataset, n_experiences, seed, source="auto", wordnet=None):
    """Group semantically close classes together so that the experiences are far apart."""
    check_n_experiences("distant", n_experiences, len(dataset.classes))
    D, used = class_distances(dataset, source, wordnet)
    groups = group_classes(D, n_experiences, seed)
    intra, inter = split_distances(D, groups)
    log.info(
        "distant stream (%s distances): mean class distance %.3f within experiences, %.3f between experiences", used, intra, inter
    )
    experiences = class_experiences(dataset, groups)
    n = len(D)
    for e, g in zip(experiences, groups):
        others = np.setdiff1d(np.arange(n), g)
        block = D[np.ix_(g, g)]
        e.info.update(
            intra_distance=float(block.sum() / max(1, len(g) * (len(g) - 1))),
            inter_distance=float(D[np.ix_(g, others)].mean()) if len(others) else 0.0,
            mean_intra_distance=intra,
            mean_inter_distance=inter,
            distance_source=used,
        )
    return experiences


@hookimpl
def ssl_bench_streams():
    return {"distant": distant_class_incremental}
