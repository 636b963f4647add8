"""Continual strategies (``ssl_bench_strategies``): how a method is trained through the experiences.

Start a new one from ``sequential.py``. Replay buffers are in :mod:`ssl_bench.blocks.buffers`, the
quadratic regulariser of MAS and EWC in :mod:`ssl_bench.blocks.regularizers`.
"""
