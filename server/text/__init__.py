"""Text in: tokenizing a model's BYTES `text` input into its token tensors, as the source model's tokenizer does."""
