"""Operators that dominate the harness's cost, each with a plain-PyTorch reference.

The references are the test oracle; the compiled kernels in ``csrc/`` (issue 7) implement
the same functions.
"""

from ssl_bench.ops.contrastive import info_nce, moco_info_nce, nt_xent

__all__ = ["nt_xent", "info_nce", "moco_info_nce"]
