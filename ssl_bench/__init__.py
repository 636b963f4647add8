"""ssl-bench: a benchmark harness for self-supervised pre-training on streaming data.

The package is grouped by role (ARCHITECTURE.md): the contract plugins are written against at the top
(``api``, ``hookspecs``, ``registry``, ``protocol``, ``recipe``, ``options``, ``errors``, ...);
``blocks/``, the toolkit plugins build with; ``ops/``, the compiled operators; ``engine/``, what runs one
run; ``results/``, the result-file contract and what reads it; ``commands/``, one module per CLI command.
"""

import pluggy

from ssl_bench import _moved

__version__ = "0.2.0"

#: Decorator that marks a function of a plugin module as an implementation of an ssl-bench hook.
hookimpl = pluggy.HookimplMarker("ssl_bench")

_moved.install()

__all__ = ["__version__", "hookimpl"]
