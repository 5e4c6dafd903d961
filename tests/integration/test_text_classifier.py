"""A `*ForSequenceClassification` directory converts to a classifier: `logits` [num_labels] with Triton's
`label_filename` (labels from id2label, in the model directory), the tokenizer and the `text` input; text in gives
the logits that client-side tokens give (same program, same ids: only batch layout moves fp32 sums, ~1e-6)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from server.app import build_app
from server.repository import read_config
from server.settings import Settings
from server.types import InferRequest, InferTensor, RequestedOutput
from tests.support.text_models import CLASSIFIER_LABELS, DATA, minilm_path


def test_the_config_names_logits_and_labels(classifier_repository: Path) -> None:
    config = read_config(classifier_repository / "topic", "topic")
    assert [(t.name, list(t.dims), t.label_filename) for t in config.output] == [("logits", [2], "labels.txt")]
    assert (classifier_repository / "topic" / "labels.txt").read_text() == "".join(f"{n}\n" for n in CLASSIFIER_LABELS)
    assert "text" in {t.name for t in config.input}
    assert config.parameters["text_max_length"].string_value == "512"  # tokenizer model_max_length (no ST config)
    assert (classifier_repository / "topic" / "1" / "tokenizer.json").is_file()


def test_text_logits_equal_client_token_logits(classifier_repository: Path) -> None:
    from transformers import AutoTokenizer

    lines = (DATA / "prose.txt").read_text(encoding="utf-8").splitlines()[100:110]
    app = build_app(Settings(model_repository=classifier_repository, device="cpu"))
    asyncio.run(app.registry.load_all())
    app.dataplane.starting = False
    try:
        text = np.array([[s.encode()] for s in lines], dtype=object)
        tokens = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)(
            lines, padding=True, return_tensors="np")

        def logits(inputs: list[InferTensor]) -> np.ndarray:
            request = InferRequest("topic", "", inputs, [RequestedOutput("logits")])
            return asyncio.run(app.dataplane.infer(request)).outputs[0].data

        from_text = logits([InferTensor("text", "BYTES", text.shape, text)])
        from_tokens = logits([InferTensor(n, "INT64", tokens[n].shape, tokens[n].astype(np.int64))
                              for n in ("input_ids", "attention_mask", "token_type_ids")])
        assert from_text.shape == (10, 2)
        np.testing.assert_allclose(from_text, from_tokens, rtol=1e-4, atol=1e-4)
    finally:
        asyncio.run(app.registry.close())
