"""The plugins that ship with ssl-bench, one folder per kind.

Every module here is an ordinary ssl-bench plugin, written exactly as an outside
contributor would write one: module-level metadata (``__version__``, ``__license__``,
``__paper__``) and ``@hookimpl`` functions. Each file is named after what it registers
(``methods/simclr.py`` registers the method ``simclr``; hyphens become underscores, and the
``class`` stream lives in ``streams/class_.py`` because ``class`` is a Python keyword); a file
that registers a family (``cifar10`` and ``cifar100``) is named after the family. The
harness walks the sub-packages and registers every module through the same code path as
installed and ``--plugin`` plugins. No plugin imports another: what several of them share
is a public module of the core (:mod:`ssl_bench.blocks.heads`, :mod:`ssl_bench.blocks.buffers`, ...).
"""
