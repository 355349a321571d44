"""Tokenize a split once and keep it as a memory-mapped Arrow IPC file.

The cache key covers everything that changes the token ids: the split's content (not its path
or mtime), the tokenizer (vocab, normalisation, special tokens), max_length and the mode. Trials
running at the same time may build the same file; each writes a temp file and atomically
renames it, so readers only ever see a complete file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from trainables.data.readers import RawSplit
from trainables.errors import ConfigError
from trainables.tasks import TASKS

logger = logging.getLogger("mtsweep.data")

MODES: tuple[str, ...] = ("single", "separate", "pair")
# Bump when the file layout or tokenization call changes, to invalidate old caches.
CACHE_FORMAT_VERSION = 1
_TOKENIZE_CHUNK = 4096  # rows per tokenizer call: bounds peak memory on big splits


def digest_raw(raw: RawSplit) -> str:
    """sha256 hex digest of a split's content: task, ids, texts and labels (not its source)."""
    h = hashlib.sha256()
    # json.dumps makes the list encoding unambiguous (no separator can collide with the text).
    h.update(json.dumps([raw.task, raw.ids, raw.texts_a, raw.texts_b]).encode("utf-8"))
    if raw.labels is None:
        h.update(b"no-labels")
    else:
        labels = np.ascontiguousarray(raw.labels)
        h.update(str(labels.dtype).encode())
        h.update(labels.tobytes())
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Stable sha256 hex digest of what a tokenizer maps text to.

    Covers the class, the sorted vocab, lowercasing/accent options and special tokens, and for
    fast tokenizers the whole backend definition (normalizer, pre-tokenizer, post-processor)
    minus its truncation/padding state, which a previous call may have left set.
    """
    parts: dict[str, Any] = {
        "class": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
    }
    init = getattr(tokenizer, "init_kwargs", {}) or {}
    for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
        value = getattr(tokenizer, key, init.get(key))
        parts[key] = value if isinstance(value, (bool, int, str, type(None))) else str(value)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        parts["backend"] = spec
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def _check_mode(raw: RawSplit, mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown tokenization mode {mode!r}; expected one of {', '.join(MODES)}")
    pair = TASKS[raw.task].pair
    if pair and mode == "single":
        raise ConfigError(
            f"task {raw.task!r} is a sentence pair: mode must be 'separate' or 'pair'"
        )
    if not pair and mode != "single":
        raise ConfigError(
            f"task {raw.task!r} has one sentence: mode must be 'single', not {mode!r}"
        )


def cache_key(raw: RawSplit, tokenizer: Any, max_length: int, mode: str) -> str:
    """The sha256 hex key of a tokenized split (see the module docstring for what it covers)."""
    blob = json.dumps(
        [
            digest_raw(raw),
            tokenizer_fingerprint(tokenizer),
            int(max_length),
            mode,
            CACHE_FORMAT_VERSION,
        ]
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class TokenizedSplit:
    """A tokenized split backed by a memory-mapped Arrow table.

    Columns: "id" (string), "label" (int64 / float32; absent without labels) and
    single: "input_ids"; separate: "input_ids_a", "input_ids_b";
    pair: "input_ids", "token_type_ids" (all list<int32>).
    `lengths` is the per-row token count used for bucketing (separate: max of both sides).
    """

    table: pa.Table
    mode: str
    num_rows: int
    lengths: np.ndarray
    cache_path: Path
    cache_hit: bool
    ids: list[str]
    # Zero-copy numpy views (offsets, values) of each list column, made once for fast collation.
    _lists: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _label_array: np.ndarray | None = field(default=None, repr=False, compare=False)

    def list_column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, values) numpy views of a list<int32> column: row i is values[o[i]:o[i+1]]."""
        if name not in self._lists:
            col = self.table.column(name)
            # Normally one chunk (the file holds one record batch); combining copies otherwise.
            arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
            offsets = arr.offsets.to_numpy(zero_copy_only=False)
            values = arr.values.to_numpy(zero_copy_only=True)
            self._lists[name] = (offsets, values)
        return self._lists[name]

    def row_lengths(self, name: str) -> np.ndarray:
        """Per-row token count of one list column."""
        offsets, _ = self.list_column(name)
        return np.diff(offsets).astype(np.int64)

    @property
    def has_labels(self) -> bool:
        return "label" in self.table.column_names

    def labels(self) -> np.ndarray | None:
        """The label column as numpy (int64 or float32), or None without labels."""
        if not self.has_labels:
            return None
        if self._label_array is None:
            self._label_array = self.table.column("label").to_numpy()
        return self._label_array

    def __len__(self) -> int:
        return self.num_rows


def _to_list_array(seqs: list[list[int]]) -> pa.Array:
    """list<int32> array from Python lists, built from flat numpy buffers (fast)."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.fromiter(
        itertools.chain.from_iterable(seqs), dtype=np.int32, count=int(lengths.sum())
    )
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _tokenize(raw: RawSplit, tokenizer: Any, max_length: int, mode: str) -> dict[str, pa.Array]:
    cols: dict[str, list[list[int]]] = {}

    def run(key: str, *texts: list[str], types: bool = False) -> None:
        out_ids: list[list[int]] = []
        out_types: list[list[int]] = []
        for start in range(0, len(raw), _TOKENIZE_CHUNK):
            chunk = [t[start : start + _TOKENIZE_CHUNK] for t in texts]
            enc = tokenizer(
                *chunk,
                truncation=True,
                max_length=max_length,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=types,
            )
            out_ids.extend(enc["input_ids"])
            if types:
                out_types.extend(enc["token_type_ids"])
        cols[key] = out_ids
        if types:
            cols["token_type_ids"] = out_types

    if mode == "single":
        run("input_ids", raw.texts_a)
    elif mode == "separate":
        run("input_ids_a", raw.texts_a)
        run("input_ids_b", raw.texts_b)  # type: ignore[arg-type]
    else:  # pair: "[CLS] a [SEP] b [SEP]", truncated longest-first to max_length
        run("input_ids", raw.texts_a, raw.texts_b, types=True)  # type: ignore[arg-type]
    return {k: _to_list_array(v) for k, v in cols.items()}


def _build_table(raw: RawSplit, tokenizer: Any, max_length: int, mode: str, key: str) -> pa.Table:
    arrays: dict[str, pa.Array] = {"id": pa.array(raw.ids, type=pa.string())}
    arrays.update(_tokenize(raw, tokenizer, max_length, mode))
    if raw.labels is not None:
        arrays["label"] = pa.array(raw.labels)
    meta = {
        "mtsweep.key": key,
        "mtsweep.task": raw.task,
        "mtsweep.mode": mode,
        "mtsweep.max_length": str(max_length),
        "mtsweep.source": raw.source,
        "mtsweep.version": str(CACHE_FORMAT_VERSION),
    }
    return pa.table(arrays).replace_schema_metadata(meta)


def _write_atomic(table: pa.Table, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        # Uncompressed on purpose: compressed IPC buffers cannot be memory-mapped zero-copy.
        with pa.OSFile(tmp, "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=max(table.num_rows, 1))
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_mapped(path: Path) -> pa.Table:
    # Zero-copy: the table's buffers point into the mapping, so N trials share page cache.
    source = pa.memory_map(str(path), "r")
    return ipc.open_file(source).read_all()


def load_tokenized(
    raw: RawSplit, tokenizer: Any, max_length: int, mode: str, cache_dir: str | Path
) -> TokenizedSplit:
    """Tokenize `raw` (or reuse the cached result) and return it memory-mapped.

    mode is one of MODES; max_length truncates (no padding here: batches pad dynamically).
    The cache file lives in `cache_dir` under a name ending in the content+tokenizer key.
    """
    _check_mode(raw, mode)
    if max_length < 2:
        raise ConfigError(f"max_length must be at least 2, got {max_length}")
    key = cache_key(raw, tokenizer, max_length, mode)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{raw.task}-{mode}-L{max_length}-{key[:20]}.arrow"

    table: pa.Table | None = None
    hit = False
    if path.is_file():
        try:
            table = _read_mapped(path)
            meta = table.schema.metadata or {}
            if meta.get(b"mtsweep.key") != key.encode():
                table = None  # a prefix collision or a foreign file: rebuild
            else:
                hit = True
        except (pa.ArrowInvalid, OSError) as e:
            logger.warning("%s: unreadable cache file (%s); rebuilding it", path, e)
            table = None
    if table is None:
        built = _build_table(raw, tokenizer, max_length, mode, key)
        _write_atomic(built, path)
        del built
        table = _read_mapped(path)
        logger.info("%s: tokenized %d rows (%s, max_length %d)", path, len(raw), mode, max_length)

    split = TokenizedSplit(
        table=table,
        mode=mode,
        num_rows=table.num_rows,
        lengths=np.empty(0, dtype=np.int64),
        cache_path=path,
        cache_hit=hit,
        ids=table.column("id").to_pylist(),
    )
    if mode == "separate":
        split.lengths = np.maximum(
            split.row_lengths("input_ids_a"), split.row_lengths("input_ids_b")
        )
    else:
        split.lengths = split.row_lengths("input_ids")
    return split
