"""Linear probe: a multinomial logistic regression on frozen features, per experience.

For each experience j, the classifier is trained on the features of j's labelled training
samples and tested on j's held-out samples; after every phase this gives one row of the
accuracy matrix. Features are extracted once per phase by the engine; the classifier
(:func:`ssl_bench.probes.fit_predict`) is fitted full-batch with L-BFGS on standardised
features (deterministic, no learning rate to tune), with a small L2 penalty. The features are
cached by the engine, so a probe costs a few L-BFGS iterations on a [n, D] matrix, not a pass
through the network.
"""

import numpy as np

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator
from ssl_bench.probes import fit_predict

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Kolesnikov et al., Revisiting Self-Supervised Visual Representation Learning, CVPR 2019"


class LinearProbe(Evaluator):
    name = "linear"
    when = "phase"

    def __init__(self, l2: float = 1e-4, max_iter: int = 200):
        self.l2, self.max_iter = l2, max_iter

    def evaluate(self, run, features, previous):
        acc = []
        for tr, tr_y, te, te_y in zip(features.train, features.train_labels, features.test, features.test_labels):
            pred = fit_predict(tr, tr_y, te, self.l2, self.max_iter)
            acc.append((pred == te_y).double().mean().item())
        return {"acc": np.array(acc)}


@hookimpl
def ssl_bench_evaluators():
    return {"linear": LinearProbe}
