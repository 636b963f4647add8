"""Evaluators (``ssl_bench_evaluators``): measure the frozen backbone. Start a new one from ``knn.py``.

The pooled held-out features and the linear-probe solver are in :mod:`ssl_bench.blocks.probes`.
"""
