"""A text model's tokenizer, loaded at model load from the version directory's tokenizer.json.

Why HF `tokenizers` and not a re-implementation: sentence-transformers tokenizes all-MiniLM-L6-v2 with the same
Rust tokenizer (a "fast" tokenizer wraps tokenizer.json), so loading that file and setting the same truncation and
padding gives the same ids for the same text. The file's own padding (often Fixed 128) and truncation settings
are replaced by the config's: pad to the longest row of each call, truncate at `text_max_length`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from server.errors import invalid
from server.repository import RepositoryError
from server.text import names


@dataclass(frozen=True)
class TextFacts:
    """What config.pbtxt says about tokenizing this model's text."""

    max_length: int
    pad_id: int
    pad_token: str
    token_inputs: tuple[str, ...]  # produced by tokenization, in config order
    required_inputs: tuple[str, ...]  # what a token-tensor request must send
    embedding_output: str  # "" when the model has no pooled embedding
    normalized: bool


def _parameter(config: mc.ModelConfig, key: str, default: str | None = None) -> str:
    if key in config.parameters:
        return config.parameters[key].string_value
    if default is None:
        raise RepositoryError(f"{config.name}: a text model's config needs parameter {key!r}")
    return default


def read_facts(config: mc.ModelConfig) -> TextFacts:
    max_length = _parameter(config, names.MAX_LENGTH)
    pad_id = _parameter(config, names.PAD_ID, "0")
    if not max_length.isdigit() or int(max_length) < 1 or not pad_id.isdigit():
        raise RepositoryError(f"{config.name}: parameters {names.MAX_LENGTH!r} and {names.PAD_ID!r} must be "
                              f"non-negative integers, got {max_length!r} and {pad_id!r}")
    token_inputs = tuple(n for n in _parameter(config, names.TOKEN_INPUTS, "input_ids,attention_mask").split(",") if n)
    tensor_names = {t.name for t in config.input if t.data_type != mc.TYPE_STRING}
    unknown = [n for n in token_inputs if n not in tensor_names]
    if unknown or "input_ids" not in token_inputs:
        raise RepositoryError(f"{config.name}: parameter {names.TOKEN_INPUTS!r} names {list(token_inputs)}; "
                              f"the config's token inputs are {sorted(tensor_names)} (input_ids required)")
    required = tuple(n for n in _parameter(config, names.REQUIRED_INPUTS, ",".join(token_inputs)).split(",") if n)
    output = _parameter(config, names.EMBEDDING_OUTPUT, "")
    return TextFacts(int(max_length), int(pad_id), _parameter(config, names.PAD_TOKEN, "[PAD]"), token_inputs,
                     required, output, _parameter(config, names.EMBEDDING_NORMALIZED, "false") == "true")


@dataclass(frozen=True)
class Tokens:
    """One call's tokenization: INT64 arrays [rows, L] by input name (L = its longest row), per-row lengths."""

    arrays: dict[str, np.ndarray]
    lengths: list[int]


class TextTokenizer:
    """Thread-safe encode of a batch of strings (the Rust tokenizer takes no Python lock while it works)."""

    def __init__(self, path: Path, facts: TextFacts) -> None:
        from tokenizers import Tokenizer  # imported here: token-only models never load it

        self.facts = facts
        self._truncating = Tokenizer.from_file(str(path))
        self._truncating.enable_truncation(facts.max_length)
        self._whole = Tokenizer.from_file(str(path))
        self._whole.no_truncation()
        for tokenizer in (self._truncating, self._whole):
            tokenizer.enable_padding(pad_id=facts.pad_id, pad_token=facts.pad_token)  # to the longest row
        self.vocab_size = self._truncating.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: list[str], truncate: bool = True, what: str = "text row") -> Tokens:
        """Token arrays for `texts`; with `truncate` False an over-long row is a 400 naming the limit."""
        encodings = (self._truncating if truncate else self._whole).encode_batch(texts)
        lengths = [sum(e.attention_mask) for e in encodings]
        if not truncate:
            over = next((i for i, n in enumerate(lengths) if n > self.facts.max_length), None)
            if over is not None:
                raise invalid(f"{what} {over} is {lengths[over]} tokens, more than the model's limit of "
                              f"{self.facts.max_length}; shorten it or send truncate: true")
        arrays = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                  "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                  "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        return Tokens({n: arrays[n] for n in self.facts.token_inputs}, lengths)

    def from_ids(self, rows: list[list[int]]) -> Tokens:
        """Token arrays for client-given id lists (OpenAI's token input), padded like `encode`; ids are checked
        against the vocabulary and lengths against the limit (raw ids are never silently cut)."""
        for i, row in enumerate(rows):
            if len(row) > self.facts.max_length:
                raise invalid(f"input {i} is {len(row)} tokens, more than the model's limit of "
                              f"{self.facts.max_length}")
            bad = next((t for t in row if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise invalid(f"input {i}: token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.facts.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return Tokens({n: arrays[n] for n in self.facts.token_inputs}, [len(r) for r in rows])


def load_text(version_dir: Path, config: mc.ModelConfig) -> TextTokenizer | None:
    """The tokenizer of a model whose config has a BYTES `text` input and whose version directory has
    tokenizer.json; None otherwise (a token-only model)."""
    text_inputs = [t for t in config.input if t.name == names.TEXT_INPUT and t.data_type == mc.TYPE_STRING]
    if not text_inputs:
        return None
    if list(text_inputs[0].dims) != [1] or config.max_batch_size < 1:
        raise RepositoryError(f"{config.name}: input {names.TEXT_INPUT!r} must have dims [1] in a batching model")
    path = version_dir / names.TOKENIZER_FILE
    if not path.is_file():  # the model still serves its token inputs; text to it is a 400 naming the model
        return None
    return TextTokenizer(path, read_facts(config))
