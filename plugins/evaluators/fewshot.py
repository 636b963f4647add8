"""Few-shot classification with frozen features: seeded N-way K-shot episodes.

Episodes are drawn from the held-out samples of all experiences pooled (each test sample
once): pick ``n_way`` classes, then per class ``k`` support and up to ``n_query`` query
samples, all distinct. The classifier is either ``prototype`` (nearest class mean of the
L2-normalised support features by cosine similarity; Snell et al. 2017) or ``logreg``
(logistic regression on the support set, as in the linear probe). The same seed gives the
same episodes in every phase and every run, so numbers are comparable across phases.
Keys: ``acc_<k>shot`` (mean accuracy over episodes) and ``ci95_<k>shot`` (1.96 x standard
error) for every k in ``shots``.
"""

import numpy as np
import torch

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator
from ssl_bench.blocks.probes import episodes, fit_predict, held_out, prototype_predict
from ssl_bench.errors import UserError

__all__ = ["FewShot", "episodes", "prototype_predict"]  # the episodes and the classifier live in blocks.probes

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Snell et al., Prototypical Networks for Few-shot Learning, NeurIPS 2017"


class FewShot(Evaluator):
    name = "fewshot"
    when = "phase"

    def __init__(
        self, n_way: int = 5, shots=(1, 5), n_query: int = 15, episodes: int = 100, classifier: str = "prototype", seed: int = 0
    ):
        shots = [shots] if isinstance(shots, int) else list(shots)
        if classifier not in ("prototype", "logreg"):
            raise UserError(f"fewshot: classifier must be 'prototype' or 'logreg', got '{classifier}'")
        if n_way < 2 or n_query < 1 or episodes < 1 or not shots or min(shots) < 1:
            raise UserError("fewshot: n_way >= 2, n_query >= 1, episodes >= 1 and shots >= 1 are required")
        self.n_way, self.shots, self.n_query, self.n_episodes = n_way, shots, n_query, episodes
        self.classifier, self.seed = classifier, seed

    def setup(self, run):
        """Fail at the start of the run when the held-out split cannot fill the episodes."""
        labels = run.dataset.test.labels.numpy()[np.unique(np.concatenate([e.test_idx for e in run.experiences]))]
        for k in self.shots:
            next(episodes(labels, self.n_way, k, self.n_query, 1, self.seed))

    def evaluate(self, run, features, previous):
        _, x, y = held_out(run, features)
        out = {}
        for k in self.shots:
            accs = []
            for s, s_y, q, q_y in episodes(y.numpy(), self.n_way, k, self.n_query, self.n_episodes, self.seed + k):
                s_y, q_y = torch.from_numpy(s_y), torch.from_numpy(q_y)
                if self.classifier == "prototype":
                    pred = prototype_predict(x[s], s_y, x[q], self.n_way)
                else:
                    pred = fit_predict(x[s], s_y, x[q], max_iter=100)
                accs.append((pred == q_y).double().mean().item())
            out[f"acc_{k}shot"] = float(np.mean(accs))
            out[f"ci95_{k}shot"] = float(1.96 * np.std(accs) / np.sqrt(len(accs)))
        return out


@hookimpl
def ssl_bench_evaluators():
    return {"fewshot": FewShot}
