"""Random class-incremental stream: the classes shuffled with the seed and dealt into T groups.

Every experience holds all training and held-out samples of its classes and no other, so
two experiences never share a class. ``Experience.classes`` lists each experience's classes in
the shuffled order, which the result file keeps (``stream/class_order``). The experiences are
made by :func:`ssl_bench.blocks.class_groups.class_experiences`.
"""

import numpy as np

from ssl_bench import hookimpl
from ssl_bench.blocks.class_groups import check_n_experiences, class_experiences

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"


def class_incremental(dataset, n_experiences, seed):
    """Shuffle the classes with ``seed`` and split them into ``n_experiences`` groups of (nearly) equal size."""
    check_n_experiences("class", n_experiences, len(dataset.classes))
    order = np.random.default_rng(seed).permutation(len(dataset.classes))
    return class_experiences(dataset, np.array_split(order, n_experiences))


@hookimpl
def ssl_bench_streams():
    return {"class": class_incremental}
