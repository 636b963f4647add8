"""Linear probe: a multinomial logistic regression on frozen features, per experience.

For each experience j, the classifier is trained on the features of j's labelled training
samples and tested on j's held-out samples; after every phase this gives one row of the
accuracy matrix. Features are extracted once per phase by the engine; the classifier is
fitted full-batch with L-BFGS on standardised features (deterministic, no learning rate to
tune), with a small L2 penalty. The features are cached by the engine, so a probe costs
a few L-BFGS iterations on a [n, D] matrix, not a pass through the network.

:func:`held_out` pools every experience's held-out features (each test sample once); the
collapse, CKA and few-shot evaluators measure on it.
"""

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Kolesnikov et al., Revisiting Self-Supervised Visual Representation Learning, CVPR 2019"


@contextlib.contextmanager
def _threads(n: int):
    """Run with at most ``n`` intra-op threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_predict(train_x, train_y, test_x, l2=1e-4, max_iter=200):
    """Fit logistic regression on (train_x, train_y) and return predicted labels of test_x.

    Small CPU problems (under a million feature entries) run on one thread: the few hundred
    L-BFGS evaluations of small matrix products are latency-bound, and on a busy 2-core machine
    a 400 x 128 probe took 15 s with 2 threads and 0.4 s with one.
    """
    if train_x.device.type == "cpu" and train_x.numel() < 1_000_000:
        with _threads(1):
            return _fit_predict(train_x, train_y, test_x, l2, max_iter)
    return _fit_predict(train_x, train_y, test_x, l2, max_iter)


def _fit_predict(train_x, train_y, test_x, l2, max_iter):
    classes, y = torch.unique(train_y, return_inverse=True)
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True) + 1e-6
    x, xt = ((train_x - mean) / std).double(), ((test_x - mean) / std).double()
    w = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return classes[(xt @ w + b).argmax(1)]


def held_out(run, features):
    """All experiences' held-out features, each test sample once: (test indices sorted, [n, D] features, labels)."""
    idx = np.concatenate([np.asarray(e.test_idx) for e in run.experiences])
    feats, labels = torch.cat(features.test), torch.cat(features.test_labels)
    if len(idx) != len(feats):
        raise ValueError(f"{len(feats)} held-out features for {len(idx)} test indices")
    idx, first = np.unique(idx, return_index=True)
    first = torch.from_numpy(first)
    return idx, feats[first], labels[first]


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
