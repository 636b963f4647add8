"""Evaluators (``ssl_bench_evaluators``): measure the frozen backbone. Start a new one from ``knn.py``."""
