"""Build small but real model repositories for tests: torch modules, exported, 2:4-compressed, with configs.

Each builder returns the torch module whose outputs the served model must reproduce exactly, so tests compare
against the real model, never against numbers written into the test.
"""

from __future__ import annotations

from pathlib import Path

import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.artifacts import save_program, save_weights
from server.repository import CONFIG_FILE


def prune_2_4(weight: torch.Tensor) -> torch.Tensor:
    """Magnitude 2:4 along the input dimension (test helper; the converter has the real methods)."""
    rows, cols = weight.shape
    groups = weight.reshape(rows, cols // 4, 4)
    keep = groups.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return (groups * mask).reshape(rows, cols)


class SmallMLP(torch.nn.Module):
    """16 -> 32 -> 4 with the hidden layer stored 2:4."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = torch.nn.Linear(16, 32)
        self.head = torch.nn.Linear(32, 4)
        with torch.no_grad():
            self.hidden.weight.copy_(prune_2_4(self.hidden.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(x)))


class Mixed(torch.nn.Module):
    """Several dtypes in, a dict out: exercises every codec path through a real program."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"A2": a * 2, "B1": b + 1, "NOTC": torch.logical_not(c), "D": d * 1}


def write_model(root: Path, name: str, module: torch.nn.Module, example: tuple[torch.Tensor, ...], config_text: str,
                version: int = 1, sparse: set[str] | None = None, batched: bool = True) -> None:
    module.eval()
    dynamic = tuple({0: torch.export.Dim("batch", min=1, max=1024)} for _ in example) if batched else None
    program = torch.export.export(module, example, dynamic_shapes=dynamic)
    version_dir = root / name / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    save_program(program, version_dir / "program.pt2")
    save_weights(dict(module.state_dict()), sparse or set(), version_dir / "weights.safetensors")
    config = mc.ModelConfig()
    text_format.Parse(config_text, config)
    (root / name / CONFIG_FILE).write_text(text_format.MessageToString(config))


MLP_CONFIG = """
name: "{name}"
backend: "twofour"
max_batch_size: 8
input [{{ name: "INPUT0" data_type: TYPE_FP32 dims: [16] }}]
output [{{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] }}]
{extra}
"""

MIXED_CONFIG = """
name: "mixed"
backend: "twofour"
max_batch_size: 4
input [
  { name: "A" data_type: TYPE_FP16 dims: [3] },
  { name: "B" data_type: TYPE_INT32 dims: [3] },
  { name: "C" data_type: TYPE_BOOL dims: [3] },
  { name: "D" data_type: TYPE_BF16 dims: [3] }
]
output [
  { name: "A2" data_type: TYPE_FP16 dims: [3] },
  { name: "B1" data_type: TYPE_INT32 dims: [3] },
  { name: "NOTC" data_type: TYPE_BOOL dims: [3] },
  { name: "D" data_type: TYPE_BF16 dims: [3] }
]
"""


def build_test_repository(root: Path) -> dict[str, torch.nn.Module]:
    """mlp (2:4 hidden layer), mlp_batched (dynamic batching), mixed (dtypes), broken (bad config)."""
    root.mkdir(parents=True, exist_ok=True)
    x = torch.randn(2, 16)
    mlp = SmallMLP(seed=0)
    write_model(root, "mlp", mlp, (x,), MLP_CONFIG.format(name="mlp", extra=""), sparse={"hidden.weight"})
    batched = SmallMLP(seed=1)
    write_model(root, "mlp_batched", batched, (x,),
                MLP_CONFIG.format(name="mlp_batched",
                                  extra="dynamic_batching { max_queue_delay_microseconds: 2000 }"),
                sparse={"hidden.weight"})
    mixed = Mixed()
    ex = (torch.ones(2, 3, dtype=torch.float16), torch.ones(2, 3, dtype=torch.int32),
          torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bfloat16))
    write_model(root, "mixed", mixed, ex, MIXED_CONFIG)
    broken = root / "broken" / "1"
    broken.mkdir(parents=True, exist_ok=True)
    (root / "broken" / CONFIG_FILE).write_text('name: "broken"\nmax_batch_size: -3\n')
    return {"mlp": mlp, "mlp_batched": batched, "mixed": mixed}


class Slow(torch.nn.Module):
    """A deliberately heavy chain of 1024x1024 GEMMs: keeps requests in flight long enough to SIGTERM them."""

    def __init__(self, depth: int = 64) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.weight = torch.nn.Parameter(torch.randn(1024, 1024) / 32)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.depth):
            x = torch.tanh(x @ self.weight)
        return x


SLOW_CONFIG = """
name: "slow"
backend: "twofour"
max_batch_size: 256
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [1024] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [1024] }]
"""


def build_slow_model(root: Path) -> torch.nn.Module:
    module = Slow()
    write_model(root, "slow", module, (torch.randn(2, 1024),), SLOW_CONFIG)
    return module


EMBED_CONFIG = """
name: "embed"
max_batch_size: 4
input [{ name: "INDEX" data_type: TYPE_INT64 dims: [3] }]
output [{ name: "VECTORS" data_type: TYPE_FP32 dims: [3, 4] }]
"""


class Embed(torch.nn.Module):
    """A lookup table of 10 rows: an index past them makes the runtime itself fail (IndexError), as real models do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.table = torch.nn.Embedding(10, 4)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table(index)


CLASSIFIER_CONFIG = """
name: "classifier"
backend: "twofour"
max_batch_size: 8
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [16] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] label_filename: "labels.txt" }]
"""
# One label has ':' (clients split at most twice) and one is not ASCII: both must come back byte for byte.
CLASSIFIER_LABELS = ("cat", "dog", "bird:small", "d\u00f6ner")

TEXTY_CONFIG = """
name: "texty"
backend: "twofour"
max_batch_size: 8
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [16] },
       { name: "text" data_type: TYPE_STRING dims: [1] optional: true }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] }]
"""


def build_bytes_repository(root: Path) -> dict[str, torch.nn.Module]:
    """classifier (an MLP whose output has a labels file, for the classification extension) and texty (an MLP whose
    config also declares an optional TYPE_STRING `text` input, as a text model does, but has no tokenizer)."""
    root.mkdir(parents=True, exist_ok=True)
    x = torch.randn(2, 16)
    classifier = SmallMLP(seed=5)
    write_model(root, "classifier", classifier, (x,), CLASSIFIER_CONFIG, sparse={"hidden.weight"})
    (root / "classifier" / "labels.txt").write_text("\n".join(CLASSIFIER_LABELS) + "\n", encoding="utf-8")
    texty = SmallMLP(seed=6)
    write_model(root, "texty", texty, (x,), TEXTY_CONFIG, sparse={"hidden.weight"})
    return {"classifier": classifier, "texty": texty}
