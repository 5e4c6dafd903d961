"""BERT-base-shaped 2:4 models for the GPU tests and bench/gpu.py, built and pruned here: encoder MLP blocks on
vectors, and the same blocks over a token sequence (embedding in, mean-pooled vector out), where a batch of n
requests is n x sequence rows for every GEMM, as in a real encoder."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.support.models import prune_2_4, write_model

CONFIG = """
name: "{name}"
max_batch_size: {max_batch}
input [{{ name: "{input}" data_type: {datatype} dims: [{dims}] }}]
output [{{ name: "Y" data_type: TYPE_FP32 dims: [{hidden}] }}]
{extra}
"""


class EncoderMLP(torch.nn.Module):
    """`blocks` residual MLPs hidden -> 4*hidden -> hidden with LayerNorm, every linear pruned 2:4."""

    def __init__(self, hidden: int = 768, blocks: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.up = torch.nn.ModuleList(torch.nn.Linear(hidden, 4 * hidden) for _ in range(blocks))
        self.down = torch.nn.ModuleList(torch.nn.Linear(4 * hidden, hidden) for _ in range(blocks))
        self.norm = torch.nn.ModuleList(torch.nn.LayerNorm(hidden) for _ in range(blocks))
        with torch.no_grad():
            for layer in [*self.up, *self.down]:
                layer.weight.copy_(prune_2_4(layer.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for up, down, norm in zip(self.up, self.down, self.norm, strict=True):
            x = norm(x + down(torch.nn.functional.gelu(up(x))))
        return x

    def sparse_names(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.startswith(("up.", "down.")) and n.endswith(".weight")}


def write_encoder(root: Path, name: str, model: EncoderMLP, hidden: int, max_batch: int, sparse: bool = True,
                  extra: str = "") -> None:
    write_model(root, name, model.eval(), (torch.randn(2, hidden),),
                CONFIG.format(name=name, max_batch=max_batch, input="X", datatype="TYPE_FP32", dims=hidden,
                              hidden=hidden, extra=extra),
                sparse=model.sparse_names() if sparse else set())


class TokenEncoder(torch.nn.Module):
    """Token ids -> embedding -> EncoderMLP blocks -> mean over the sequence. Attention is left out on purpose:
    it has no weights to prune, and the MLP GEMMs are where 2:4 acts (two thirds of BERT's weights)."""

    def __init__(self, hidden: int = 768, blocks: int = 2, vocab: int = 30522, seed: int = 0) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.encoder = EncoderMLP(hidden, blocks, seed)
        self.vocab = vocab

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(tokens)).mean(dim=1)

    def sparse_names(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.sparse_names()}


def write_token_encoder(root: Path, name: str, model: TokenEncoder, hidden: int, sequence: int, max_batch: int,
                        sparse: bool = True) -> None:
    example = torch.randint(0, model.vocab, (2, sequence))
    write_model(root, name, model.eval(), (example,),
                CONFIG.format(name=name, max_batch=max_batch, input="TOKENS", datatype="TYPE_INT64", dims=sequence,
                              hidden=hidden, extra=""),
                sparse=model.sparse_names() if sparse else set())
