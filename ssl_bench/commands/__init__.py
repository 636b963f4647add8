"""The ``ssl-bench`` commands, one module per command (``ssl_bench.cli`` parses and dispatches)."""
