"""The pieces of deploy/image_check.py (make image-check) that decide pass or fail, on real inputs: the process
tree it reads uids from (this process and a real child), and the comparison that accepts fp32 reordering only."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from tests.deploy.test_pip_sources import load

image_check = load("image_check")


def test_process_tree_finds_children() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        tree = image_check.process_tree(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
    finally:
        child.kill()
        child.wait()


def test_assert_close_accepts_summation_order_and_rejects_another_answer() -> None:
    want = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32) * 5
    reordered = want * (1 + np.float32(2**-20))  # 1e-6 relative: the size of a summation-order difference
    image_check.assert_close(reordered, want, "test", "fp32")
    with pytest.raises(AssertionError):
        image_check.assert_close(want[:, ::-1].copy(), want, "test", "fp32")  # a model that answers other numbers
    with pytest.raises(AssertionError):
        image_check.assert_close(want.astype(np.float64), want, "test", "fp32")
    with pytest.raises(AssertionError):  # bf16-sized differences are not fp32's
        image_check.assert_close(want * (1 + np.float32(2**-8)), want, "test", "fp32")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_assert_close_at_a_reduced_precision_accepts_its_rounding_only(precision: str) -> None:
    want = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32) * 5
    rounded = want * (1 + np.float32(2**-8))  # one bf16 ulp (8 significand bits) on every value
    image_check.assert_close(rounded, want, "test", precision)
    with pytest.raises(AssertionError):
        image_check.assert_close(want[:, ::-1].copy(), want, "test", precision)
