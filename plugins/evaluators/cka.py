"""Representation similarity (linear CKA) of the backbone across phases (and, from the files, to the joint model).

On a fixed subset of the held-out samples (``n_samples`` of them, chosen from the pooled
test indices with a fixed seed, so every run of the same protocol and stream uses the same
ones), after every phase:

- ``prev``: linear CKA between the features after this phase and after the one before
  (the first phase is compared with the random-init backbone);
- ``features`` (float16, [n, D]) and ``index`` (their test indices): stored per phase, so
  that CKA between any two phases, or with another run, can be computed from the files
  (``ssl-bench plot`` draws the phase x phase matrix; ``ssl-bench report`` and
  ``ssl_bench.results.continual.cka_to_joint`` compare a run's final backbone with its joint run's).

A result depends only on its configuration: CKA to the joint run is computed from both files by the tools
that read them, never stored by the run (0.1.0 stored ``end/cka/joint`` when the joint run's file happened
to be in ``--out`` already; 0.2.0 stores nothing at the end).
"""

import numpy as np
import torch

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator
from ssl_bench.blocks.probes import held_out
from ssl_bench.errors import UserError
from ssl_bench.results.continual import linear_cka

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "Kornblith et al., Similarity of Neural Network Representations Revisited, ICML 2019"


class CKA(Evaluator):
    name = "cka"
    when = "phase"

    def __init__(self, n_samples: int = 256, seed: int = 0):
        if not isinstance(n_samples, int) or n_samples < 2:
            raise UserError(f"cka: n_samples must be an integer >= 2, got {n_samples!r}")
        self.n_samples, self.seed = n_samples, seed

    def subset(self, run, features):
        idx, x, _ = held_out(run, features)
        if len(idx) > self.n_samples:
            keep = np.sort(np.random.default_rng(self.seed).choice(len(idx), self.n_samples, replace=False))
            idx, x = idx[keep], x[torch.from_numpy(keep)]
        return idx, x

    def evaluate(self, run, features, previous):
        idx, x = self.subset(run, features)
        out = {"features": x.half().numpy(), "index": idx.astype(np.int64)}
        if previous is not None:
            out["prev"] = linear_cka(x, self.subset(run, previous)[1])
        return out


@hookimpl
def ssl_bench_evaluators():
    return {"cka": CKA}
