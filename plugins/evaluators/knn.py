"""Weighted k-nearest-neighbour classifier on frozen features, per experience (Wu et al. 2018).

For each experience j, the memory bank is the L2-normalised features of j's labelled
probe-training samples; a held-out sample's k nearest neighbours by cosine similarity s
vote for their class with weight ``exp(s / T)``; the class with the largest summed weight
wins. ``k`` larger than the bank uses the whole bank. Returns ``acc`` per experience for the
first k (so ``knn`` can be a protocol's primary evaluator; the leaderboard's kNN column), and
``acc_k<k>`` for every other k (k = 20, 200 by default: ``acc`` is k = 20, ``acc_k200``).

0.2.0 stores each accuracy once: 0.1.0 also stored the first k's as ``acc_k<k>``, a copy of ``acc``
(the numbers are the same).
"""

import numpy as np
import torch
import torch.nn.functional as F

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator
from ssl_bench.errors import UserError

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination, CVPR 2018"


def knn_predict(bank, bank_labels, queries, k, temperature=0.07, chunk=1024):
    """Predicted labels of ``queries`` by temperature-weighted cosine kNN over ``bank``."""
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    classes, y = torch.unique(bank_labels, return_inverse=True)
    k = min(k, len(bank))
    preds = []
    for s in range(0, len(queries), chunk):
        sim = queries[s : s + chunk] @ bank.T
        top, pos = sim.topk(k, dim=1)
        votes = torch.zeros(len(sim), len(classes), dtype=torch.float64)
        votes.scatter_add_(1, y[pos], torch.exp(top.double() / temperature))
        preds.append(classes[votes.argmax(1)])
    return torch.cat(preds) if preds else bank_labels[:0]


class KNN(Evaluator):
    name = "knn"
    when = "phase"

    def __init__(self, k=(20, 200), temperature: float = 0.07):
        ks = [k] if isinstance(k, int) else list(k)
        if not ks or any(not isinstance(v, int) or v < 1 for v in ks):
            raise UserError(f"knn: k must be a positive integer or a list of them, got {k!r}")
        if temperature <= 0:
            raise UserError(f"knn: temperature must be > 0, got {temperature}")
        self.ks, self.temperature = ks, float(temperature)

    def evaluate(self, run, features, previous):
        out = {}
        for i, k in enumerate(self.ks):
            acc = [
                (knn_predict(tr, tr_y, te, k, self.temperature) == te_y).double().mean().item()
                for tr, tr_y, te, te_y in zip(features.train, features.train_labels, features.test, features.test_labels)
            ]
            out["acc" if i == 0 else f"acc_k{k}"] = np.array(acc)
        return out


@hookimpl
def ssl_bench_evaluators():
    return {"knn": KNN}
