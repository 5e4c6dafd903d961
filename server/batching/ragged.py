"""What a model's config says about batching requests of different sequence lengths together.

A model opts in with one config parameter naming its attention-mask input:

    parameters { key: "pad_to_longest" value { string_value: "attention_mask" } }

Then every input whose first non-batch dim is variable (`dims: [-1, ...]`) is a *sequence input*: requests that
differ only in that dim share a batch, padded to the batch's longest (mask 0, everything else its pad value);
every output whose first non-batch dim is variable carries the padded sequence dim and is narrowed back to each
request's own length (sentence-level outputs such as `[rows, H]` pass through). Optional parameters:

    max_batch_tokens   rows x padded length allowed in one batch (default DEFAULT_MAX_BATCH_TOKENS); a single
                       request is never split, so one larger than the budget runs alone
    pad_value:<input>  the value a sequence input is padded with (default 0: BERT's [PAD] id, a 0 mask and
                       token type); e.g. `pad_value:input_ids` = "1" for RoBERTa-style vocabularies

Why one mask name rather than Triton's per-input ragged semantics: the answer is unchanged by padding only when
the model masks padded positions, so the config must say which input is that mask; the rest follows from dims.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from server.batching.work import WorkItem

PAD_TO_LONGEST = "pad_to_longest"
MAX_BATCH_TOKENS = "max_batch_tokens"
PAD_VALUE_PREFIX = "pad_value:"
DEFAULT_MAX_BATCH_TOKENS = 16384  # 64 rows of 256 tokens, or 128 of MiniLM's mean ~26-token sentences padded x4


@dataclass(frozen=True, slots=True)
class PaddingSpec:
    """How one padded model's requests are keyed, measured, merged and split."""

    mask: str
    sequence_inputs: frozenset[str]
    sequence_outputs: frozenset[str]
    pad_values: dict[str, int]
    max_batch_tokens: int

    def shape_key(self, item: WorkItem) -> tuple:
        """Like WorkItem.shape_key, without the sequence dim of sequence inputs: any lengths may merge."""
        return tuple((n, t.dtype, tuple(t.shape[2:]) if n in self.sequence_inputs else tuple(t.shape[1:]))
                     for n, t in sorted(item.inputs.items()))

    def length(self, item: WorkItem) -> int:
        """The request's sequence length (its sequence inputs all agree; `check` made sure)."""
        return int(item.inputs[self.mask].shape[1]) if self.mask in item.inputs else 0

    def check(self, item: WorkItem) -> str:
        """Why the request cannot be padded and merged, or '' when it can."""
        lengths = {n: int(t.shape[1]) for n, t in item.inputs.items() if n in self.sequence_inputs and t.dim() >= 2}
        if self.mask not in lengths:
            return f"input {self.mask!r} (the attention mask this model pads with) is required"
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{n} {v}" for n, v in sorted(lengths.items()))
            return f"sequence inputs must have the same length (dim 1): {listed}"
        if not lengths[self.mask]:
            # alone it could not run; padded into a batch it would get an answer from mask-0 rows alone
            return f"sequence inputs must hold at least one token (input {self.mask!r} has length 0)"
        return ""


def padding_spec(config: mc.ModelConfig) -> PaddingSpec | None:
    """The config's padding rule, or None when the model does not pad; ValueError names a config mistake."""
    params = config.parameters
    if PAD_TO_LONGEST not in params:
        return None
    mask = params[PAD_TO_LONGEST].string_value
    where = f"{config.name}: parameter {PAD_TO_LONGEST!r}"
    if config.max_batch_size <= 0:
        raise ValueError(f"{where} needs max_batch_size > 0 (padding merges rows along the batch dim)")
    sequence_inputs = frozenset(t.name for t in config.input if len(t.dims) >= 1 and t.dims[0] == -1)
    if mask not in {t.name for t in config.input}:
        raise ValueError(f"{where} names {mask!r}, which is not one of the model's inputs")
    if mask not in sequence_inputs:
        raise ValueError(f"{where}: input {mask!r} must have a variable first dim (dims: [-1]) to be padded")
    budget = DEFAULT_MAX_BATCH_TOKENS
    if MAX_BATCH_TOKENS in params:
        budget = _positive_int(params[MAX_BATCH_TOKENS].string_value, f"{config.name}: {MAX_BATCH_TOKENS}")
    pad_values: dict[str, int] = {}
    for key, value in params.items():
        if key.startswith(PAD_VALUE_PREFIX):
            name = key[len(PAD_VALUE_PREFIX):]
            if name not in sequence_inputs:
                raise ValueError(f"{config.name}: parameter {key!r} names no sequence input "
                                 f"(sequence inputs: {sorted(sequence_inputs)})")
            if name == mask:
                raise ValueError(f"{config.name}: the attention mask {mask!r} is always padded with 0")
            pad_values[name] = _int(value.string_value, f"{config.name}: {key}")
    sequence_outputs = frozenset(t.name for t in config.output if len(t.dims) >= 1 and t.dims[0] == -1)
    return PaddingSpec(mask, sequence_inputs, sequence_outputs, pad_values, budget)


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {text!r}") from None


def _positive_int(text: str, what: str) -> int:
    value = _int(text, what)
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return value
