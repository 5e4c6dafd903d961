"""The names a text model's config uses (written by `twofour convert`, read by the server at load)."""

from __future__ import annotations

TEXT_INPUT = "text"  # the BYTES input: one UTF-8 string per row, requests [batch, 1]
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

# config.pbtxt parameters (string values)
MAX_LENGTH = "text_max_length"  # tokens per row after truncation (sentence-transformers' max_seq_length)
PAD_ID = "text_pad_id"
PAD_TOKEN = "text_pad_token"
TOKEN_INPUTS = "text_token_inputs"  # comma-separated: what tokenization produces, e.g. input_ids,attention_mask
REQUIRED_INPUTS = "text_required_inputs"  # the token inputs a request of the tensor form must send
EMBEDDING_OUTPUT = "embedding_output"  # the output /v1/embeddings returns (sentence_embedding)
EMBEDDING_NORMALIZED = "embedding_normalized"  # "true" when that output is L2-normalized (`dimensions` allowed)
