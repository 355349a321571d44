"""Shared fixtures: offline Hugging Face, a demo data set, a tokenized-data cache, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach for a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
CS224N = REPO.parent / "shared" / "data" / "cs224n"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("token-cache")
    os.environ["MTSWEEP_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    from trainables.data.demo import write_demo_data

    path = tmp_path_factory.mktemp("demo-data")
    write_demo_data(path, seed=0)
    return path


def tiny_dict(demo_dir: Path, **top) -> dict:
    """A small, fast trial config (plain dict) on the demo data."""
    raw = {
        "seed": 3,
        "epochs": 2,
        "batch_size": 16,
        "eval_batch_size": 64,
        "max_length": 32,
        "encoder": {"name": "tiny", "pooling": "mean"},
        "tasks": {
            "sst": {"head": "mlp", "loss": "ce"},
            "para": {"head": "cosine", "loss": "bce", "head_args": {"scale": 5.0}},
            "sts": {"head": "cosine", "loss": "mse"},
        },
        "schedule": {"name": "round_robin", "epoch_length": "shortest"},
        "optim": {"lr": 1e-3},
        "data": {
            "dir": str(demo_dir),
            "format": "cs224n",
            "train_limit": {"sst": 160, "para": 160, "sts": 160},
            "dev_limit": {"sst": 64, "para": 64, "sts": 64},
        },
    }
    raw.update(top)
    return raw


@pytest.fixture
def tiny_config(demo_dir, cache_dir):
    from trainables.config import TrialConfig

    def make(overrides: dict | None = None, **top):
        return TrialConfig.from_dict(tiny_dict(demo_dir, **top)).replace(overrides or {})

    return make
