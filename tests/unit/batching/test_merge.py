import pytest
import torch

from server.batching.merge import BatchShapeError, merge, split


def test_merge_concatenates_each_input_in_request_order() -> None:
    a = {"x": torch.tensor([[1.0, 2.0]]), "ids": torch.tensor([[7]])}
    b = {"x": torch.tensor([[3.0, 4.0], [5.0, 6.0]]), "ids": torch.tensor([[8], [9]])}
    batch = merge([a, b])
    assert torch.equal(batch["x"], torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert torch.equal(batch["ids"], torch.tensor([[7], [8], [9]]))


def test_merge_of_one_request_is_not_a_copy() -> None:
    x = torch.ones(2, 4)
    assert merge([{"x": x}])["x"] is x


def test_merge_refuses_different_input_names() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        merge([{"x": torch.ones(1, 2)}, {"z": torch.ones(1, 2)}])
    with pytest.raises(ValueError):
        merge([])


def test_split_gives_each_request_its_rows_as_contiguous_views() -> None:
    y = torch.arange(12.0).reshape(6, 2)
    parts = split({"y": y}, [1, 3, 2])
    assert [p["y"].tolist() for p in parts] == [y[0:1].tolist(), y[1:4].tolist(), y[4:6].tolist()]
    for p in parts:
        assert p["y"].is_contiguous()
        assert p["y"].untyped_storage().data_ptr() == y.untyped_storage().data_ptr()  # no copy


def test_split_makes_a_non_contiguous_output_contiguous() -> None:
    y = torch.arange(12.0).reshape(2, 6).t()  # 6 x 2, transposed view
    parts = split({"y": y}, [4, 2])
    assert all(p["y"].is_contiguous() for p in parts)
    assert torch.equal(torch.cat([p["y"] for p in parts]), y)


def test_split_rejects_outputs_without_the_batch_rows() -> None:
    with pytest.raises(BatchShapeError, match="expected 3 rows"):
        split({"y": torch.ones(2, 5)}, [1, 2])
    with pytest.raises(BatchShapeError):
        split({"y": torch.tensor(1.0)}, [1])


def test_merge_then_split_round_trips() -> None:
    requests = [{"x": torch.randn(n, 5)} for n in (2, 1, 4)]
    parts = split(merge(requests), [2, 1, 4])
    for original, part in zip(requests, parts, strict=True):
        assert torch.equal(original["x"], part["x"])
