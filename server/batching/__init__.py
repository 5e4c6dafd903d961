"""Scheduling: how requests reach a runtime. `create_scheduler` picks dynamic batching or one-at-a-time."""
