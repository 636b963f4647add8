"""ssl-bench: a benchmark harness for self-supervised pre-training on streaming data."""

import pluggy

__version__ = "0.1.0"

#: Decorator that marks a function of a plugin module as an implementation of an ssl-bench hook.
hookimpl = pluggy.HookimplMarker("ssl_bench")

__all__ = ["__version__", "hookimpl"]
