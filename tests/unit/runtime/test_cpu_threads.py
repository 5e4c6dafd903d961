"""A model's instances share the process's intra-op threads instead of each taking all of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from server.batching.threads import compute_executor, threads_per_instance


@pytest.fixture
def four_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_the_budget_is_split_across_instances(four_threads: None) -> None:
    assert [threads_per_instance(n) for n in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]


def test_each_compute_thread_runs_with_its_share(four_threads: None) -> None:
    with compute_executor(2, "share", threads_per_instance(2)) as executor:
        assert {executor.submit(torch.get_num_threads).result() for _ in range(4)} == {2}
    with compute_executor(1, "whole") as executor:  # the default: the count in force, as before
        assert executor.submit(torch.get_num_threads).result() == 4
