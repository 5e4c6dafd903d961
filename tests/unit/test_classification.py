"""Triton's classification extension: top-k `score:index[:label]` strings, highest first, as classification.cc does."""

from __future__ import annotations

import numpy as np
import pytest

from server import classification
from server.errors import ServingError
from server.types import InferTensor, RequestedOutput

LABELS = {"y": (b"zero", b"one", b"two:with:colons")}


def classify(data: np.ndarray, k: int, datatype: str = "FP32", batched: bool = True,
             labels: classification.Labels | None = None) -> InferTensor:
    plan = classification.plan([RequestedOutput("y", {"classification": k, "binary_data": True})], batched,
                               LABELS if labels is None else labels)
    assert plan is not None
    [out] = plan.apply([InferTensor("y", datatype, data.shape, data, {"classification": k, "binary_data": True})])
    return out


def test_top_k_per_row_with_labels_and_printf_scores() -> None:
    logits = np.array([[0.1, 2.5, -1.0], [3.0, 0.0, 0.25]], np.float32)
    out = classify(logits, 2)
    assert out.datatype == "BYTES" and out.shape == (2, 2) and out.data.shape == (2, 2)
    assert out.data.tolist() == [[b"2.500000:1:one", b"0.100000:0:zero"],
                                 [b"3.000000:0:zero", b"0.250000:2:two:with:colons"]]
    assert out.parameters == {"binary_data": True}  # the request's classification parameter is not echoed


def test_order_matches_numpy_argsort_on_random_logits() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 10)).astype(np.float32)
    out = classify(logits, 4, labels={})
    for row, entries in zip(logits, out.data.tolist(), strict=True):
        expected = np.argsort(-row)[:4]
        assert [int(e.split(b":")[1]) for e in entries] == expected.tolist()
        assert [float(e.split(b":")[0]) for e in entries] == pytest.approx(row[expected], abs=5e-7)  # %f: 6 places


def test_k_is_capped_ties_keep_index_order_and_unlabelled_indices_have_no_label() -> None:
    scores = np.array([[1, 7, 7, 0, 7]], np.int32)
    out = classify(scores, 10)
    assert out.shape == (1, 5)
    assert out.data.tolist() == [[b"7:1:one", b"7:2:two:with:colons", b"7:4", b"1:0:zero", b"0:3"]]


def test_unsigned_and_narrow_types_and_unbatched_models() -> None:
    assert classify(np.array([3, 250, 9], np.uint8), 2, "UINT8", batched=False).data.tolist() == \
        [b"250:1:one", b"9:2:two:with:colons"]
    out = classify(np.array([[1.5, -2.0]], np.float64), 1, "FP64")
    assert out.shape == (1, 1) and out.data.tolist() == [[b"1.500000:0:zero"]]
    bf16 = (np.array([[0.5, 4.0]], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    assert classify(bf16, 1, "BF16").data.tolist() == [[b"4.000000:1:one"]]


def test_a_multi_dimensional_output_ranks_each_row_flattened() -> None:
    data = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    assert classify(data, 1, labels={}).data.tolist() == [[b"5.000000:5"], [b"11.000000:5"]]


def test_no_classification_requested_costs_nothing() -> None:
    assert classification.plan([RequestedOutput("y", {"binary_data": True})], True, LABELS) is None
    assert classification.plan([RequestedOutput("y", {"classification": 0})], True, LABELS) is None


@pytest.mark.parametrize("value", [-1, 1.5, "3", True])
def test_bad_class_counts_are_refused(value: object) -> None:
    with pytest.raises(ServingError, match="parameter 'classification' must be a non-negative integer"):
        classification.plan([RequestedOutput("y", {"classification": value})], True, LABELS)


def test_bool_outputs_cannot_be_classified() -> None:
    with pytest.raises(ServingError, match="classification is not available for its datatype BOOL"):
        classify(np.array([[True, False]]), 1, "BOOL")


def test_cpp_float_spelling() -> None:
    assert classification._cpp_float(float("nan")) == "nan"
    assert classification._cpp_float(float("-inf")) == "-inf"
    assert classification._cpp_float(1e-7) == "0.000000"
    assert classification._cpp_float(123456789.0) == "123456789.000000"
