"""Backbones (``ssl_bench_backbones``, or :func:`ssl_bench.blocks.backbones.register_backbone`). Start from ``resnet.py``."""
