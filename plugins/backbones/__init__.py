"""Backbones (``ssl_bench_backbones``, or :func:`ssl_bench.backbones.register_backbone`). Start from ``resnet.py``."""
