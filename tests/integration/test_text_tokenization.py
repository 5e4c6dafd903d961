"""The converted text model's tokenizer gives sentence-transformers' ids for the same text, and the converter
wrote what the server needs (tokenizer files, the optional BYTES `text` input, the length and tokenizer facts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.repository import read_config
from server.text.names import TEXT_INPUT
from server.text.tokenizer import load_text
from tests.support.text_models import DATA, minilm_path

sentence_transformers = pytest.importorskip("sentence_transformers")

LINES = (DATA / "heldout.txt").read_text(encoding="utf-8").splitlines()
ODD = ["  leading and trailing spaces  ", "Crème brûlée à la française, naïve café", "東京は日本の首都です。",
       "emoji 🤖🚀 and tabs\tand\nnewlines", "ALL CAPS SHOUTING", "x", "'quotes' \"double\" (brackets) [1,2]"]
LONG = [" ".join(LINES[:40]), " ".join(LINES[40:50])]  # well past 256 tokens: truncation must cut the same way


@pytest.fixture(scope="module")
def served_tokenizer(text_repository: Path):  # type: ignore[no-untyped-def]
    config = read_config(text_repository / "minilm", "minilm")
    tokenizer = load_text(text_repository / "minilm" / "1", config)
    assert tokenizer is not None
    return tokenizer


def test_the_version_directory_holds_the_tokenizer_and_the_config_takes_text(text_repository: Path) -> None:
    version = text_repository / "minilm" / "1"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        assert (version / name).read_bytes() == (minilm_path() / name).read_bytes()
    assert not any(p.suffix in (".bin", ".pkl", ".pt") for p in version.iterdir())
    config = read_config(text_repository / "minilm", "minilm")
    inputs = {t.name: t for t in config.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids", TEXT_INPUT]
    assert all(t.optional for t in inputs.values())
    assert list(inputs[TEXT_INPUT].dims) == [1]
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    st = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")
    assert parameters["text_max_length"] == str(st.max_seq_length) == "256"
    assert parameters["embedding_output"] == "sentence_embedding" and parameters["embedding_normalized"] == "true"


@pytest.mark.parametrize("lines", [LINES[:64], LINES[64:], ODD, LONG, LINES[:3] + LONG[:1]],
                         ids=["heldout-a", "heldout-b", "odd", "long", "mixed"])
def test_ids_equal_sentence_transformers(served_tokenizer, lines: list[str]) -> None:  # type: ignore[no-untyped-def]
    st = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")
    expected = st.tokenize(lines)
    tokens = served_tokenizer.encode(lines)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(tokens.arrays[name], expected[name].numpy(), err_msg=name)
    assert tokens.lengths == expected["attention_mask"].sum(dim=1).tolist()
    assert max(tokens.lengths) <= 256


def test_truncate_false_names_the_limit(served_tokenizer) -> None:  # type: ignore[no-untyped-def]
    from server.errors import ErrorKind, ServingError

    with pytest.raises(ServingError) as caught:
        served_tokenizer.encode(["short", LONG[0]], truncate=False)
    assert caught.value.kind == ErrorKind.INVALID_ARGUMENT
    assert "text row 1" in caught.value.message and "256" in caught.value.message
    assert served_tokenizer.encode(LINES[:2], truncate=False).lengths == served_tokenizer.encode(LINES[:2]).lengths
