"""Tokenization cache (Arrow IPC, memory-mapped), length bucketing and collation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from trainables.data import cache as cache_mod
from trainables.data.batching import collate, make_batches, padding_efficiency
from trainables.data.cache import (
    digest_raw,
    load_tokenized,
    tokenizer_fingerprint,
)
from trainables.data.readers import RawSplit, read_split
from trainables.data.tiny import build_tiny_tokenizer
from trainables.errors import ConfigError

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cs224n"


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def _sst() -> RawSplit:
    texts = ["a good film .", "terrible", "the plot is dull and the cast is weak .", "ok"]
    return RawSplit(
        "sst",
        "mem",
        "jsonl",
        ["w", "x", "y", "z"],
        texts,
        None,
        np.array([3, 0, 1, 2], dtype=np.int64),
    )


def _sts() -> RawSplit:
    a = ["a man is running in the park .", "a dog", "two cats sleep ."]
    b = ["a man runs .", "a black dog is eating in the kitchen .", "cats"]
    return RawSplit(
        "sts", "mem", "jsonl", ["1", "2", "3"], a, b, np.array([4.0, 1.5, 3.2], dtype=np.float32)
    )


# --------------------------------------------------------------------------------------------
# Cache


def test_cache_miss_then_hit_memory_mapped(tok, tmp_path: Path, monkeypatch) -> None:
    raw = _sst()
    first = load_tokenized(raw, tok, 32, "single", tmp_path)
    assert not first.cache_hit and first.cache_path.is_file()
    assert first.cache_path.parent == tmp_path
    assert not list(tmp_path.glob("*.tmp"))  # the temp file was renamed into place

    # The hit must go through pa.memory_map, and reading it must not copy the buffers into
    # Arrow's memory pool (zero-copy).
    mapped: list[str] = []
    real_map = pa.memory_map

    def spy(path, mode="r"):
        mapped.append(str(path))
        return real_map(path, mode)

    monkeypatch.setattr(cache_mod.pa, "memory_map", spy)
    before = pa.total_allocated_bytes()
    second = load_tokenized(raw, tok, 32, "single", tmp_path)
    assert pa.total_allocated_bytes() - before < 1024
    assert second.cache_hit and mapped == [str(first.cache_path)]
    assert second.table.equals(first.table)
    assert second.ids == raw.ids and second.num_rows == 4
    assert second.table.column_names == ["id", "input_ids", "label"]
    assert second.table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert second.labels().dtype == np.int64
    ids = second.table.column("input_ids").to_pylist()
    assert ids[1] == tok("terrible")["input_ids"]
    np.testing.assert_array_equal(second.lengths, [len(x) for x in ids])


def test_cache_key_changes(tok, tmp_path: Path) -> None:
    raw = _sts()
    base = load_tokenized(raw, tok, 32, "pair", tmp_path).cache_path
    assert load_tokenized(raw, tok, 16, "pair", tmp_path).cache_path != base
    assert load_tokenized(raw, tok, 32, "separate", tmp_path).cache_path != base
    changed = replace(raw, texts_b=[*raw.texts_b[:-1], "dogs"])
    assert digest_raw(changed) != digest_raw(raw)
    assert load_tokenized(changed, tok, 32, "pair", tmp_path).cache_path != base
    relabeled = replace(raw, labels=raw.labels + np.float32(0.5))
    assert digest_raw(relabeled) != digest_raw(raw)
    # Same content from another source path: same key (content-keyed, not path-keyed).
    moved = replace(raw, source="/elsewhere/sts-dev.csv", format="cs224n")
    assert digest_raw(moved) == digest_raw(raw)
    hit = load_tokenized(moved, tok, 32, "pair", tmp_path)
    assert hit.cache_hit and hit.cache_path == base
    assert len(list(tmp_path.glob("*.arrow"))) == 4


def test_tokenizer_fingerprint(tok) -> None:
    fp = tokenizer_fingerprint(tok)
    tok("some text", "more", truncation=True, max_length=7)  # leaves truncation state behind
    assert tokenizer_fingerprint(tok) == fp
    assert tokenizer_fingerprint(build_tiny_tokenizer()) == fp
    other = build_tiny_tokenizer()
    other.add_tokens(["zzzword"])
    assert tokenizer_fingerprint(other) != fp


def test_bad_mode(tok, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown tokenization mode"):
        load_tokenized(_sst(), tok, 32, "triple", tmp_path)
    with pytest.raises(ConfigError, match="sentence pair"):
        load_tokenized(_sts(), tok, 32, "single", tmp_path)
    with pytest.raises(ConfigError, match="one sentence"):
        load_tokenized(_sst(), tok, 32, "pair", tmp_path)


# --------------------------------------------------------------------------------------------
# Batching


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
def test_make_batches_cover_and_deterministic(bucket: bool, shuffle: bool) -> None:
    lengths = np.random.default_rng(1).integers(3, 60, size=1003)
    b1 = make_batches(lengths, 16, shuffle=shuffle, seed=7, bucket=bucket, bucket_chunk=4)
    b2 = make_batches(lengths, 16, shuffle=shuffle, seed=7, bucket=bucket, bucket_chunk=4)
    assert all(np.array_equal(x, y) for x, y in zip(b1, b2, strict=True))
    flat = np.concatenate(b1)
    assert flat.dtype == np.int64 and np.array_equal(np.sort(flat), np.arange(1003))
    assert sum(len(b) < 16 for b in b1) == 1
    dropped = make_batches(lengths, 16, shuffle=shuffle, seed=7, bucket=bucket, drop_last=True)
    assert all(len(b) == 16 for b in dropped) and len(dropped) == 1003 // 16
    if shuffle:
        b3 = make_batches(lengths, 16, shuffle=True, seed=8, bucket=bucket, bucket_chunk=4)
        assert not all(np.array_equal(x, y) for x, y in zip(b1, b3, strict=False))
    elif bucket:
        assert np.all(np.diff(lengths[flat]) >= 0)  # eval: sorted by length
    else:
        assert np.array_equal(flat, np.arange(1003))  # eval, no bucketing: file order


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real CS224N data not found at {REAL}")
def test_bucketing_padding_efficiency_real_sst(tok, tmp_path: Path) -> None:
    split = load_tokenized(
        read_split("sst", REAL / "ids-sst-train.csv"), tok, 128, "single", tmp_path
    )
    bucketed = make_batches(split.lengths, 32, shuffle=True, seed=0, bucket=True)
    plain = make_batches(split.lengths, 32, shuffle=True, seed=0, bucket=False)
    real_b, comp_b = padding_efficiency(split, bucketed)
    real_p, comp_p = padding_efficiency(split, plain)
    assert real_b == real_p == int(split.lengths.sum())
    eff_b, eff_p = real_b / comp_b, real_p / comp_p
    print(f"padding efficiency on SST train, batch 32: bucketed {eff_b:.3f}, plain {eff_p:.3f}")
    assert eff_b >= 0.85
    assert eff_p < 0.7


# --------------------------------------------------------------------------------------------
# Collation


def _check_padded(ids: torch.Tensor, mask: torch.Tensor, rows: list[list[int]], pad: int) -> None:
    assert ids.dtype == mask.dtype == torch.int64
    assert ids.shape == mask.shape == (len(rows), max(len(r) for r in rows))
    for i, r in enumerate(rows):
        assert ids[i, : len(r)].tolist() == r
        assert mask[i].tolist() == [1] * len(r) + [0] * (ids.shape[1] - len(r))
        assert (ids[i, len(r) :] == pad).all()


def test_collate_single(tok, tmp_path: Path) -> None:
    split = load_tokenized(_sst(), tok, 32, "single", tmp_path)
    idx = np.array([2, 1, 3])
    batch = collate(split, idx, pad_id=tok.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "index", "labels"}
    rows = split.table.column("input_ids").to_pylist()
    _check_padded(
        batch["input_ids"], batch["attention_mask"], [rows[i] for i in idx], tok.pad_token_id
    )
    assert batch["index"].tolist() == [2, 1, 3] and batch["index"].dtype == torch.int64
    assert batch["labels"].tolist() == [1, 0, 2] and batch["labels"].dtype == torch.int64


def test_collate_pair(tok, tmp_path: Path) -> None:
    split = load_tokenized(_sts(), tok, 12, "pair", tmp_path)
    assert split.lengths.max() <= 12  # truncated to max_length
    idx = np.array([1, 0, 2])
    batch = collate(split, idx, pad_id=tok.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "index", "labels"}
    rows = split.table.column("input_ids").to_pylist()
    types = split.table.column("token_type_ids").to_pylist()
    _check_padded(
        batch["input_ids"], batch["attention_mask"], [rows[i] for i in idx], tok.pad_token_id
    )
    assert batch["token_type_ids"].dtype == torch.int64
    for j, i in enumerate(idx):
        assert batch["token_type_ids"][j, : len(types[i])].tolist() == types[i]
        assert batch["token_type_ids"][j, len(types[i]) :].sum() == 0
        assert rows[i][0] == tok.cls_token_id and rows[i].count(tok.sep_token_id) == 2
    assert batch["labels"].dtype == torch.float32
    np.testing.assert_allclose(batch["labels"].numpy(), [1.5, 4.0, 3.2])


def test_collate_separate_and_unlabeled(tok, tmp_path: Path) -> None:
    raw = replace(_sts(), labels=None)
    split = load_tokenized(raw, tok, 32, "separate", tmp_path)
    assert "label" not in split.table.column_names and split.labels() is None
    idx = np.array([0, 1, 2])
    batch = collate(split, idx, pad_id=tok.pad_token_id)
    assert set(batch) == {
        "input_ids_a",
        "attention_mask_a",
        "input_ids_b",
        "attention_mask_b",
        "index",
    }
    for side in ("a", "b"):
        rows = split.table.column(f"input_ids_{side}").to_pylist()
        _check_padded(
            batch[f"input_ids_{side}"], batch[f"attention_mask_{side}"], rows, tok.pad_token_id
        )
    len_a = [len(r) for r in split.table.column("input_ids_a").to_pylist()]
    len_b = [len(r) for r in split.table.column("input_ids_b").to_pylist()]
    np.testing.assert_array_equal(split.lengths, np.maximum(len_a, len_b))
    real, computed = padding_efficiency(split, [idx])
    assert real == sum(len_a) + sum(len_b)
    assert computed == 3 * (max(len_a) + max(len_b))
