"""Instance-incremental stream: the training set split i.i.d. into equal chunks (Hu et al., ICLR 2022)."""

import numpy as np

from ssl_bench import hookimpl
from ssl_bench.api import Experience
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Hu et al., How Well Does Self-Supervised Pre-Training Perform with Streaming Data?, ICLR 2022"


def instance_incremental(dataset, n_experiences, seed):
    """Shuffle train and test samples with ``seed`` and deal them into ``n_experiences`` equal chunks."""
    if n_experiences > len(dataset.test):
        raise UserError(f"instance stream: {n_experiences} experiences but only {len(dataset.test)} test images")
    rng = np.random.default_rng(seed)
    train = np.array_split(rng.permutation(len(dataset.train)), n_experiences)
    test = np.array_split(rng.permutation(len(dataset.test)), n_experiences)
    labels, domains = dataset.train.labels.numpy(), dataset.train.domains.numpy()
    return [
        Experience(
            index=i,
            train_idx=np.sort(tr),
            test_idx=np.sort(te),
            classes=sorted(set(labels[tr].tolist())),
            domains=sorted(set(domains[tr].tolist())),
            name=f"chunk {i}",
        )
        for i, (tr, te) in enumerate(zip(train, test))
    ]


@hookimpl
def ssl_bench_streams():
    return {"instance": instance_incremental}
