"""The plugins that ship with ssl-bench.

Every module here is an ordinary ssl-bench plugin, written exactly as an outside
contributor would write one: module-level metadata (``__version__``, ``__license__``,
``__paper__``) and ``@hookimpl`` functions. The harness finds each module of this package
and registers it through the same code path as installed and ``--plugin`` plugins.
"""
