"""Methods (``ssl_bench_methods``): a backbone plus its heads and loss. Start a new one from ``simclr.py``.

Shared heads and the EMA update are in :mod:`ssl_bench.blocks.heads`.
"""
