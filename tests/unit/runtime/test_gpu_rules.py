"""The GPU runtime's pure rules: dtype choice, 2:4 kernel shape limits, batch buckets, GPU placement."""

from __future__ import annotations

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.runtime.gpu_rules import (
    KERNEL_LIMITS,
    batch_sizes,
    bucket_for,
    compute_dtype,
    gpu_index,
    kernel_shape_problem,
    sequence_length,
)


def config(text: str = "") -> mc.ModelConfig:
    return text_format.Parse('name: "m"\n' + text, mc.ModelConfig())


def test_dtype_defaults_to_fp16_and_follows_flag_then_config() -> None:
    assert compute_dtype("auto", config()) is torch.float16
    assert compute_dtype("bfloat16", config()) is torch.bfloat16
    bf16 = config('parameters { key: "dtype" value { string_value: "bfloat16" } }')
    assert compute_dtype("auto", bf16) is torch.bfloat16
    assert compute_dtype("float16", bf16) is torch.bfloat16  # the model's own statement is more specific
    auto = config('parameters { key: "dtype" value { string_value: "auto" } }')
    assert compute_dtype("bfloat16", auto) is torch.bfloat16


def test_dtype_refuses_fp32_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="config parameter 'dtype' is 'float32'"):
        compute_dtype("auto", config('parameters { key: "dtype" value { string_value: "float32" } }'))


def test_limits_match_the_installed_torch() -> None:
    for backend, cls in (("cusparselt", torch.sparse.SparseSemiStructuredTensorCUSPARSELT),
                         ("cutlass", torch.sparse.SparseSemiStructuredTensorCUTLASS)):
        for dtype, ours in KERNEL_LIMITS[backend].items():
            theirs = cls._DTYPE_SHAPE_CONSTRAINTS[dtype]
            assert (ours.min_rows, ours.min_cols, ours.dense_min_rows, ours.dense_min_cols) == tuple(theirs)


@pytest.mark.parametrize("backend", ["cusparselt", "cutlass"])
@pytest.mark.parametrize("shape", [(3072, 768), (768, 3072), (4096, 1024), (1024, 4096), (4096, 4096), (8192, 8192)])
def test_transformer_shapes_fit_both_backends(backend: str, shape: tuple[int, int]) -> None:
    assert kernel_shape_problem(*shape, torch.float16, backend) is None
    assert kernel_shape_problem(*shape, torch.bfloat16, backend) is None


def test_shape_minimums_differ_between_backends() -> None:
    assert kernel_shape_problem(16, 16, torch.float16, "cusparselt") is None
    assert "multiple of 32" in str(kernel_shape_problem(16, 64, torch.float16, "cutlass"))
    assert "in_features 32 is not a positive multiple of 64" in str(kernel_shape_problem(32, 32, torch.float16,
                                                                                          "cutlass"))
    assert "out_features 24" in str(kernel_shape_problem(24, 64, torch.float16, "cusparselt"))
    assert "in_features 8" in str(kernel_shape_problem(16, 8, torch.float16, "cusparselt"))


def test_fp32_never_reaches_a_2_4_kernel() -> None:
    for backend in ("cusparselt", "cutlass"):
        assert "not used in float32" in str(kernel_shape_problem(4096, 4096, torch.float32, backend))
    assert "unknown 2:4 backend" in str(kernel_shape_problem(64, 64, torch.float16, "magic"))


def test_batch_sizes_cover_powers_of_two_preferred_and_max() -> None:
    assert batch_sizes(config("max_batch_size: 8")) == [1, 2, 4, 8]
    assert batch_sizes(config("max_batch_size: 100\ndynamic_batching { preferred_batch_size: [48, 100] }")) == \
        [1, 2, 4, 8, 16, 32, 48, 64, 100]
    assert batch_sizes(config("max_batch_size: 0")) == [1]


def test_sequence_length_parameter() -> None:
    assert sequence_length(config()) == 128
    assert sequence_length(config('parameters { key: "sequence_length" value { string_value: "384" } }')) == 384
    with pytest.raises(ValueError, match="positive integer"):
        sequence_length(config('parameters { key: "sequence_length" value { string_value: "-1" } }'))


def test_gpu_placement_honours_instance_group() -> None:
    assert gpu_index(config(), 1) == 0
    assert gpu_index(config("instance_group { kind: KIND_GPU gpus: [1] }"), 2) == 1
    assert gpu_index(config("instance_group { kind: KIND_AUTO }"), 1) == 0
    assert gpu_index(config("instance_group { kind: KIND_CPU count: 2 }"), 1) is None
    with pytest.raises(ValueError, match="lists GPU 3, but this machine has 1 GPU"):
        gpu_index(config("instance_group { kind: KIND_GPU gpus: [3] }"), 1)


def test_bucket_is_the_smallest_measured_at_or_above() -> None:
    measured = [8, 16, 64, 512]
    assert [bucket_for(r, measured) for r in (1, 8, 9, 63, 64, 65, 512, 9000)] == [8, 8, 16, 64, 64, 512, 512, 512]
