"""Runtimes run a loaded program on one device; `create_runtime` picks the one for the configured device."""
