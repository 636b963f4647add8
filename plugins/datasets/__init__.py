"""Datasets (``ssl_bench_datasets``): uint8 images at the protocol's resolution.

Start a new one from ``imagefolder.py`` (image files) or ``synthetic.py`` (generated data).
Image files are listed with :mod:`ssl_bench.blocks.imagefiles` and decoded once by :mod:`ssl_bench.blocks.imagecache`.
"""
