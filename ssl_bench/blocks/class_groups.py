"""Class grouping for stream plugins: experiences made of whole classes.

Public, for built-in and outside stream plugins alike (``class`` and ``distant`` use it). A
class-incremental stream decides which classes go together; :func:`class_experiences` turns
those groups into :class:`~ssl_bench.api.Experience` objects holding every training and
held-out sample of their classes and no other::

    from ssl_bench.blocks.class_groups import check_n_experiences, class_experiences

    check_n_experiences("mystream", n_experiences, len(dataset.classes))
    return class_experiences(dataset, groups)   # groups: lists of class indices, one per experience
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ssl_bench.api import Dataset, Experience
from ssl_bench.errors import UserError


def class_experiences(dataset: Dataset, groups: Sequence[Sequence[int]], name: str = "classes") -> list[Experience]:
    """Experiences holding exactly the samples of each group of class indices (in that order)."""
    train_labels, test_labels = dataset.train.labels.numpy(), dataset.test.labels.numpy()
    train_domains = dataset.train.domains.numpy()
    out = []
    for i, members in enumerate(groups):
        group = [int(c) for c in members]
        tr = np.flatnonzero(np.isin(train_labels, group))
        te = np.flatnonzero(np.isin(test_labels, group))
        for c in group:
            if not (train_labels == c).any() or not (test_labels == c).any():
                raise UserError(
                    f"class '{dataset.classes[c]}' has no {'training' if not (train_labels == c).any() else 'held-out'} "
                    f"images in dataset {dataset.name}; remove the class or add images"
                )
        shown = ", ".join(dataset.classes[c] for c in group[:3]) + (", ..." if len(group) > 3 else "")
        out.append(
            Experience(
                index=i,
                train_idx=tr,
                test_idx=te,
                classes=group,
                domains=sorted(set(train_domains[tr].tolist())),
                name=f"{name} {shown}",
            )
        )
    return out


def check_n_experiences(stream: str, n_experiences: int, n_classes: int) -> None:
    """A one-line error naming ``stream`` unless 1 <= ``n_experiences`` <= ``n_classes``."""
    if n_experiences < 1:
        raise UserError(f"{stream} stream: n_experiences must be at least 1, got {n_experiences}")
    if n_experiences > n_classes:
        raise UserError(
            f"{stream} stream: {n_experiences} experiences but the dataset has only {n_classes} classes; "
            "use at most as many experiences as classes"
        )
