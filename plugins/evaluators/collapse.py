"""Dimensional collapse of the frozen features, from their singular-value spectrum (Li, Efros, Pathak).

Measured on every experience's held-out features pooled (each test sample once), [n, D]:
the features are centred per dimension and their singular values s_1 >= ... >= s_m
(m = min(n, D)) taken. Keys:

- ``auc``: mean over k = 1..m of ``cumsum(s)_k / sum(s)`` with the raw singular values, the
  area under the normalised cumulative spectrum. Higher = more collapsed: 1 when one
  direction holds everything; for a flat spectrum it is exactly ``(m + 1) / (2 m)``
  (0.5 + 1/(2m), so "about 0.5").
- ``auc_sq``: the same with squared singular values (explained variance).
- ``rankme``: RankMe as Garrido et al. (ICML 2023) define it: the singular values sigma of the
  *uncentred* embeddings, p_k = sigma_k / ||sigma||_1 + eps (eps = 1e-7), RankMe = exp(-sum p_k log p_k);
  between about 1 and min(n, D).
- ``erank_centered``: the same effective rank (Roy & Vetterli 2007) of the centred spectrum ``s``
  above (no eps), the spectrum the AUC is computed on; it was called ``rankme`` before version 0.2.
- ``std_normalized``: the per-dimension standard deviation of the L2-normalised embeddings,
  averaged over dimensions (SimSiam's collapse check): 0 when collapsed, about 1/sqrt(D)
  for isotropic embeddings.
- ``spectrum``: the m singular values themselves (float32), for plots.

Centred features of n samples have rank <= n - 1: with fewer held-out samples than
dimensions the trailing singular values are zero and the AUC is inflated, so compare
numbers of the same protocol only.
"""

import torch
import torch.nn.functional as F

from ssl_bench import hookimpl
from ssl_bench.api import Evaluator
from ssl_bench.blocks.probes import held_out

__version__ = "0.2.0"
__license__ = "Apache-2.0"
__paper__ = "Li, Efros, Pathak, Understanding Collapse in Non-Contrastive Siamese Representation Learning, ECCV 2022"


def spectrum(x: torch.Tensor) -> torch.Tensor:
    """Singular values of ``x`` centred per dimension, in float64, largest first."""
    x = x.double()
    return torch.linalg.svdvals(x - x.mean(0, keepdim=True))


def auc(s) -> float:
    """Mean over k of cumsum(s)_k / sum(s): the area under the normalised cumulative spectrum."""
    s = torch.as_tensor(s, dtype=torch.float64)
    return float((torch.cumsum(s, 0) / s.sum()).mean())


def effective_rank(s, eps: float = 0.0) -> float:
    """exp of the entropy of p = s / sum(s) + eps (Roy & Vetterli 2007; with eps = 1e-7 on uncentred
    embeddings, RankMe); zero entries of p add nothing."""
    s = torch.as_tensor(s, dtype=torch.float64)
    p = s / s.sum() + eps
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def rankme(x: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): effective rank of the uncentred embeddings' singular values, + eps."""
    return effective_rank(torch.linalg.svdvals(x.double()), eps)


def collapse_metrics(x: torch.Tensor) -> dict:
    s = spectrum(x)
    z = F.normalize(x.double(), dim=1)
    return {
        "auc": auc(s),
        "auc_sq": auc(s * s),
        "rankme": rankme(x),
        "erank_centered": effective_rank(s),
        "std_normalized": float(z.std(0).mean()),
        "spectrum": s.float().numpy(),
    }


class Collapse(Evaluator):
    name = "collapse"
    when = "phase"

    def evaluate(self, run, features, previous):
        _, x, _ = held_out(run, features)
        return collapse_metrics(x)


@hookimpl
def ssl_bench_evaluators():
    return {"collapse": Collapse}
