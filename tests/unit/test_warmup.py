"""model_warmup (server/warmup.py): the samples a config describes reach the runtime, and bad ones fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.warmup import WarmupError, run_warmup

MODEL = """
name: "m" max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: [3] }
input { name: "ids" data_type: TYPE_INT64 dims: [-1] optional: true }
output { name: "y" data_type: TYPE_FP32 dims: [3] }
"""


class Recording:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[dict[str, torch.Tensor]] = []
        self.fail = fail

    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.batches.append(batch)
        if self.fail:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        return {"y": batch["x"] * 2}

    def describe(self) -> None:  # pragma: no cover
        return None

    def close(self) -> None:
        pass


def config(warmup: str, model: str = MODEL) -> mc.ModelConfig:
    return text_format.Parse(model + warmup, mc.ModelConfig())


def test_zero_random_and_file_data_with_counts(tmp_path: Path) -> None:
    (tmp_path / "warmup").mkdir()
    (tmp_path / "warmup" / "x.raw").write_bytes(np.arange(6, dtype="<f4").tobytes())
    runtime = Recording()
    count = run_warmup(config("""
        model_warmup { name: "zeros" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [3]
                       zero_data: true } } }
        model_warmup { name: "random" batch_size: 8 count: 3
                       inputs { key: "x" value { data_type: TYPE_FP32 dims: [3] random_data: true } }
                       inputs { key: "ids" value { data_type: TYPE_INT64 dims: [5] random_data: true } } }
        model_warmup { name: "file" batch_size: 2 inputs { key: "x" value { data_type: TYPE_FP32 dims: [3]
                       input_data_file: "x.raw" } } }"""), runtime, tmp_path)
    assert count == 5 and len(runtime.batches) == 5
    zeros, random, *_, from_file = runtime.batches
    assert torch.equal(zeros["x"], torch.zeros(1, 3))
    assert random["x"].shape == (8, 3) and random["x"].dtype == torch.float32 and random["x"].std() > 0
    assert random["ids"].shape == (8, 5) and set(random["ids"].unique().tolist()) <= {0, 1}
    assert torch.equal(from_file["x"], torch.arange(6, dtype=torch.float32).reshape(2, 3))


def test_a_config_without_warmup_runs_nothing(tmp_path: Path) -> None:
    runtime = Recording()
    assert run_warmup(config(""), runtime, tmp_path) == 0 and runtime.batches == []


def test_a_model_failure_names_the_sample(tmp_path: Path) -> None:
    warmup = 'model_warmup { name: "big" batch_size: 8 inputs { key: "x" value { data_type: TYPE_FP32 dims: [3] ' \
             "zero_data: true } } }"
    with pytest.raises(WarmupError, match="m: model_warmup 'big' failed: RuntimeError: mat1 and mat2"):
        run_warmup(config(warmup), Recording(fail=True), tmp_path)


@pytest.mark.parametrize("sample,message", [
    ('batch_size: 9 inputs { key: "x" value { data_type: TYPE_FP32 dims: [3] zero_data: true } }',
     "batch_size 9 must be in 1..max_batch_size"),
    ('batch_size: 1 inputs { key: "z" value { data_type: TYPE_FP32 dims: [3] zero_data: true } }',
     r"inputs \['z'\] are not inputs of the model"),
    ('batch_size: 1 inputs { key: "ids" value { data_type: TYPE_INT64 dims: [3] zero_data: true } }',
     r"required inputs \['x'\] have no warmup data"),
    ('batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP16 dims: [3] zero_data: true } }',
     "data_type TYPE_FP16 differs from the model's TYPE_FP32"),
    ('batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [-1] zero_data: true } }',
     "must all be positive"),
    ('batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [3] } }',
     "give one of zero_data, random_data or input_data_file"),
    ('batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [3] input_data_file: "../x.raw" } }',
     "must name a file inside the model's warmup/ directory"),
    ('batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [3] input_data_file: "none.raw" } }',
     "warmup/none.raw does not exist"),
    ('batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [3] input_data_file: "short.raw" } }',
     r"holds 4 bytes; shape \[1, 3\] of FP32 needs 12"),
])
def test_malformed_samples_are_refused_before_running(tmp_path: Path, sample: str, message: str) -> None:
    (tmp_path / "warmup").mkdir()
    (tmp_path / "warmup" / "short.raw").write_bytes(b"\0" * 4)
    (tmp_path / "x.raw").write_bytes(b"\0" * 12)
    runtime = Recording()
    with pytest.raises(WarmupError, match=message):
        run_warmup(config(f'model_warmup {{ name: "w" {sample} }}'), runtime, tmp_path)
    assert runtime.batches == []


def test_a_model_without_a_batch_dim_gets_the_dims_as_they_are(tmp_path: Path) -> None:
    runtime = Recording()
    unbatched = MODEL.replace("max_batch_size: 8", "max_batch_size: 0")
    run_warmup(config('model_warmup { name: "w" inputs { key: "x" value { data_type: TYPE_FP32 dims: [3] '
                      "zero_data: true } } }", unbatched), runtime, tmp_path)
    assert runtime.batches[0]["x"].shape == (3,)
