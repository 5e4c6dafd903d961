"""Offline conversion: prune a model's linear layers to 2:4 and write a servable model repository version.

`twofour convert` (pipeline.py) and `twofour inspect` (inspect.py); cli.py wires them into the `twofour` CLI.
"""
