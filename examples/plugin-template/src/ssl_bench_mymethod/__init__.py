"""ssl-bench-mymethod: my self-supervised method as an ssl-bench plugin (see plugin.py)."""
