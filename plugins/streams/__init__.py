"""Streams (``ssl_bench_streams``): cut a dataset into experiences. Start a new one from ``instance.py``."""
