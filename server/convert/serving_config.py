"""What `twofour convert` adds to config.pbtxt so the server batches and warms the model up the way it expects.

- Hugging Face encoders pad: `pad_to_longest` names the attention mask (server/batching/ragged.py), so requests of
  different token counts share batches under `max_batch_tokens` and `max_padding_fraction`, written out so an
  operator sees and tunes them. They also get `ENCODER_INSTANCES` (2) instances sharing the model's threads
  (server/batching/threads.py: 2 x 1 on 2 cores): one sentence per request at c=16 makes batches of a few short
  rows, on which one GEMM's 2 threads wait for each other more than they compute; two batches of 1 thread each at
  once served 224-250 sentences/s against one instance's 160 (bench/RESULTS.md, "Text embeddings", session 8), the
  same at 32 x 128. The instances share one module: no extra weights in memory.
- A `model_warmup` (server/warmup.py) for the shapes the converter expects: one row and a full batch. For sequence
  models both at WARMUP_LENGTH tokens (the length the converter calibrates and evaluates at), a full batch being
  as many rows as the token budget allows; for fixed-shape models (the MNIST-like MLPs) batch 1 and
  max_batch_size. A model with other variable dims gets no warmup: the converter cannot know its shapes.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from server.batching.ragged import (
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_PADDING_FRACTION,
    MAX_BATCH_TOKENS,
    MAX_PADDING_FRACTION,
    PAD_TO_LONGEST,
)
from server.convert.hf import MAX_LENGTH
from server.convert.sources import Source

MASK_INPUT = "attention_mask"
ENCODER_INSTANCES = 2
WARMUP_LENGTH = MAX_LENGTH


def add_padding(config: mc.ModelConfig, source: Source) -> None:
    """Make a Hugging Face encoder's config pad to the longest request of a batch."""
    if source.kind != "huggingface" or config.max_batch_size <= 0:
        return
    if MASK_INPUT not in {t.name for t in config.input}:
        return
    config.parameters[PAD_TO_LONGEST].string_value = MASK_INPUT
    config.parameters[MAX_BATCH_TOKENS].string_value = str(DEFAULT_MAX_BATCH_TOKENS)
    config.parameters[MAX_PADDING_FRACTION].string_value = str(DEFAULT_MAX_PADDING_FRACTION)
    del config.instance_group[:]
    config.instance_group.add(count=ENCODER_INSTANCES, kind=mc.ModelInstanceGroup.KIND_AUTO)


def add_warmup(config: mc.ModelConfig) -> None:
    """One-row and full-batch zero-data warmup samples, when every input's shape is known."""
    padded = PAD_TO_LONGEST in config.parameters
    length = WARMUP_LENGTH
    shapes: dict[str, list[int]] = {}
    for tensor in config.input:
        if tensor.data_type == mc.TYPE_STRING:
            if not tensor.optional:
                return  # text is tokenized before the runtime; a model that needs it has no tensor-only sample
            continue  # the optional BYTES `text` input never reaches the program
        dims = list(tensor.dims)
        if padded and dims and dims[0] == -1:
            dims[0] = length
        if any(d < 1 for d in dims):
            return  # a variable dim the converter cannot choose
        shapes[tensor.name] = dims
    batched = config.max_batch_size > 0
    full = config.max_batch_size
    if padded:
        full = max(1, min(full, DEFAULT_MAX_BATCH_TOKENS // length))
    sizes = sorted({1, full}) if batched else [0]
    data_types = {t.name: t.data_type for t in config.input}  # shapes: only the inputs a sample feeds
    for size in sizes:
        sample = config.model_warmup.add(name=f"batch_{size}" if batched else "single", batch_size=size)
        for name, dims in shapes.items():
            sample.inputs[name].data_type = data_types[name]
            sample.inputs[name].dims.extend(dims)
            sample.inputs[name].zero_data = True
