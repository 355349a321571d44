"""The `tiny` tokenizer: a small lowercase WordPiece vocab shipped with the package.

It pairs with randomly initialised tiny BERTs for demos and tests: it needs no hub access, holds
every word of the demo data whole, and falls back to single characters for anything else.
"""

from __future__ import annotations

import inspect
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

TINY_VOCAB = "tiny_vocab.txt"


def tiny_vocab_path() -> str:
    """Filesystem path of the shipped `tiny_vocab.txt`."""
    # The package is installed as plain files (not a zip), so the resource path is a real file.
    return str(resources.files("trainables.assets").joinpath(TINY_VOCAB))


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A fast, lowercasing `BertTokenizerFast` over the tiny vocab (offline, ~2.4k tokens)."""
    from transformers import BertTokenizerFast  # heavy import, only when a tokenizer is wanted

    path = tiny_vocab_path()
    # transformers 5 takes the vocab file as `vocab=` and silently ignores `vocab_file=`
    # (giving a specials-only vocab); transformers 4 takes `vocab_file=`.
    params = inspect.signature(BertTokenizerFast.__init__).parameters
    key = "vocab" if "vocab" in params else "vocab_file"
    tok = BertTokenizerFast(**{key: path}, do_lower_case=True, model_max_length=512)
    if len(tok.get_vocab()) < 100:  # guard against the silent-ignore case above
        raise RuntimeError(f"tiny tokenizer did not load its vocab from {path}")
    return tok
