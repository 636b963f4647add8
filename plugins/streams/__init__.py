"""Streams (``ssl_bench_streams``): cut a dataset into experiences. Start a new one from ``instance.py``.

Class-incremental streams build their experiences with :mod:`ssl_bench.blocks.class_groups`.
"""
