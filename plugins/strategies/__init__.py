"""Continual strategies (``ssl_bench_strategies``): how a method is trained through the experiences.

Start a new one from ``sequential.py``.
"""
