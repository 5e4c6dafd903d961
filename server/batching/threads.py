"""The executor that runs model computations off the event loop, with torch's thread settings carried over.

Why this exists: `torch.set_num_threads(n)` in the main thread does not reach threads created later as far as
OpenMP is concerned; a fresh executor thread runs GEMMs with an OpenMP team sized to every core. On a machine whose
other cores are busy (the event loop, the client, other processes) each parallel region then stalls until the
team's second thread gets a time slice: measured here, the benchmark MLP at batch 2..8 took ~24 ms per call in an
executor thread instead of ~0.4 ms. Setting the thread count inside each worker restores the intended behaviour.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch


def compute_executor(workers: int, name: str) -> ThreadPoolExecutor:
    """`workers` threads that each use the intra-op thread count in force now (as set by the app)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name,
                              initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),))
