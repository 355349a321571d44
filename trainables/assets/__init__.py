"""Package data shipped with trainables (e.g. `tiny_vocab.txt`, the `tiny` tokenizer's vocab)."""
