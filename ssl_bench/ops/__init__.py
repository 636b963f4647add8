"""Operators that dominate the harness's cost, each with a plain-PyTorch reference.

The references are the test oracle and the fallback; the compiled kernels in ``csrc/``
(``ssl_bench._C``, issue 7) implement the same functions. ``backend()`` says which one runs.
"""

from ssl_bench.ops._ext import available, backend, has_cuda, reference_ops
from ssl_bench.ops.contrastive import info_nce, moco_info_nce, nt_xent
from ssl_bench.ops.fisher import fisher_diagonal, fisher_diagonal_reference
from ssl_bench.ops.penalty import quadratic_penalty_, quadratic_penalty_reference
from ssl_bench.ops.sharpness import eps_sharpness, hessian_trace, hvp, top_eigenvalue

__all__ = [
    "backend",
    "available",
    "has_cuda",
    "reference_ops",
    "nt_xent",
    "info_nce",
    "moco_info_nce",
    "fisher_diagonal",
    "fisher_diagonal_reference",
    "quadratic_penalty_",
    "quadratic_penalty_reference",
    "hvp",
    "top_eigenvalue",
    "hessian_trace",
    "eps_sharpness",
]
