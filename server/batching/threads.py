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


def compute_executor(workers: int, name: str, threads: int | None = None) -> ThreadPoolExecutor:
    """`workers` threads that each use `threads` intra-op threads (default: the count in force now, as set by
    the app)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=torch.set_num_threads,
                              initargs=(threads or torch.get_num_threads(),))


def threads_per_instance(instances: int) -> int:
    """The process's intra-op threads (`--intra-op-threads`, else one per core) shared by a model's instances.

    Why split: each instance runs its own batch at the same time, so N instances of T threads each put N x T
    OpenMP threads on the cores; beyond the core count they preempt each other inside every parallel region (a
    GEMM waits for its slowest thread). With one instance it is the whole budget, as before.
    """
    return max(1, torch.get_num_threads() // max(1, instances))
