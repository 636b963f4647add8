"""Random class-incremental stream: the classes shuffled with the seed and dealt into T groups.

Every experience holds all training and held-out samples of its classes and no other, so
two experiences never share a class. ``Experience.classes`` lists each experience's classes in
the shuffled order, which the result file keeps (``stream/class_order``).
"""

import numpy as np

from ssl_bench import hookimpl
from ssl_bench.api import Experience
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"


def class_experiences(dataset, groups, name="classes"):
    """Experiences holding exactly the samples of each group of class indices (in that order)."""
    train_labels, test_labels = dataset.train.labels.numpy(), dataset.test.labels.numpy()
    train_domains = dataset.train.domains.numpy()
    out = []
    for i, group in enumerate(groups):
        group = [int(c) for c in group]
        tr = np.flatnonzero(np.isin(train_labels, group))
        te = np.flatnonzero(np.isin(test_labels, group))
        for c in group:
            if not (train_labels == c).any() or not (test_labels == c).any():
                raise UserError(f"class '{dataset.classes[c]}' has no {'training' if not (train_labels == c).any() else 'held-out'} "
                                f"images in dataset {dataset.name}; remove the class or add images")
        shown = ", ".join(dataset.classes[c] for c in group[:3]) + (", ..." if len(group) > 3 else "")
        out.append(Experience(index=i, train_idx=tr, test_idx=te, classes=group,
                              domains=sorted(set(train_domains[tr].tolist())), name=f"{name} {shown}"))
    return out


def check_count(stream, n_experiences, n_classes):
    if n_experiences < 1:
        raise UserError(f"{stream} stream: n_experiences must be at least 1, got {n_experiences}")
    if n_experiences > n_classes:
        raise UserError(f"{stream} stream: {n_experiences} experiences but the dataset has only {n_classes} classes; "
                        "use at most as many experiences as classes")


def class_incremental(dataset, n_experiences, seed):
    """Shuffle the classes with ``seed`` and split them into ``n_experiences`` groups of (nearly) equal size."""
    check_count("class", n_experiences, len(dataset.classes))
    order = np.random.default_rng(seed).permutation(len(dataset.classes))
    return class_experiences(dataset, np.array_split(order, n_experiences))


@hookimpl
def ssl_bench_streams():
    return {"class": class_incremental}
