"""Length-bucketed batches and dynamic padding over a `TokenizedSplit`.

Bucketing puts rows of similar length in the same batch so that padding to the longest row
wastes little compute; shuffling happens within large chunks and over the batch order so that
training still sees a random order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from trainables.data.cache import TokenizedSplit


def make_batches(
    lengths: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    bucket: bool = True,
    bucket_chunk: int = 50,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """Split row indices 0..len(lengths)-1 into batches (arrays of int64 indices).

    shuffle=True, bucket=True: permute rows with default_rng(seed), cut into chunks of
    batch_size * bucket_chunk rows, sort each chunk by length, split into batches, then shuffle
    the batch order with the same rng. shuffle=False (eval): sort all rows by length when
    bucketing, else keep file order. drop_last drops the (one) short batch. Deterministic in seed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if bucket_chunk < 1:
        raise ValueError(f"bucket_chunk must be >= 1, got {bucket_chunk}")
    lengths = np.asarray(lengths)
    n = len(lengths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n) if shuffle else np.arange(n)

    if bucket and shuffle:
        batches: list[np.ndarray] = []
        chunk_rows = batch_size * bucket_chunk
        for start in range(0, n, chunk_rows):
            chunk = order[start : start + chunk_rows]
            # Stable sort keeps the random order among rows of equal length.
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches.extend(_split(chunk, batch_size))
    elif bucket:
        batches = _split(np.argsort(lengths, kind="stable"), batch_size)
    else:
        batches = _split(order, batch_size)

    if drop_last and batches and len(batches[-1]) < batch_size:
        # Only the final batch (of the last chunk) can be short; find it before shuffling.
        batches = batches[:-1]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _split(idx: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [idx[i : i + batch_size].astype(np.int64) for i in range(0, len(idx), batch_size)]


def _gather_padded(
    offsets: np.ndarray, values: np.ndarray, rows: np.ndarray, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad rows of a list column into a (len(rows), max_len) int64 matrix plus its mask."""
    starts = offsets[rows].astype(np.int64)
    lens = offsets[rows + 1].astype(np.int64) - starts
    max_len = int(lens.max()) if len(lens) else 0
    out = np.full((len(rows), max_len), pad, dtype=np.int64)
    mask = np.arange(max_len)[None, :] < lens[:, None]
    # Flat positions of every real token, row by row: start of its row + position in the row.
    total = int(lens.sum())
    row_start_in_flat = np.repeat(np.cumsum(lens) - lens, lens)
    flat = np.repeat(starts, lens) + (np.arange(total) - row_start_in_flat)
    out[mask] = values[flat]  # boolean-mask assignment fills row-major, matching `flat`
    return out, mask.astype(np.int64)


def collate(split: TokenizedSplit, indices: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Gather rows `indices` of `split` into padded int64 tensors.

    single/pair: input_ids, attention_mask (+ token_type_ids for pair);
    separate: input_ids_a, attention_mask_a, input_ids_b, attention_mask_b.
    Always `index` (the row indices, int64) and `labels` when the split has labels
    (int64 for classification, float32 for sts).
    """
    import torch

    rows = np.asarray(indices, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    if split.mode == "separate":
        for side in ("a", "b"):
            ids, mask = _gather_padded(*split.list_column(f"input_ids_{side}"), rows, pad_id)
            out[f"input_ids_{side}"], out[f"attention_mask_{side}"] = ids, mask
    else:
        out["input_ids"], out["attention_mask"] = _gather_padded(
            *split.list_column("input_ids"), rows, pad_id
        )
        if split.mode == "pair":
            # Padding positions get segment 0, as HF tokenizers pad token_type_ids.
            out["token_type_ids"], _ = _gather_padded(*split.list_column("token_type_ids"), rows, 0)
    batch = {k: torch.from_numpy(v) for k, v in out.items()}
    batch["index"] = torch.from_numpy(rows.copy())
    labels = split.labels()
    if labels is not None:
        y = labels[rows]
        y = y.astype(np.float32) if y.dtype.kind == "f" else y.astype(np.int64)
        batch["labels"] = torch.from_numpy(np.ascontiguousarray(y))
    return batch


def padding_efficiency(split: TokenizedSplit, batches: list[np.ndarray]) -> tuple[int, int]:
    """(real tokens, computed tokens) over `batches`; their ratio is the padding efficiency.

    computed = sum over batches of rows * longest row (both sides added for separate).
    """
    names = ["input_ids_a", "input_ids_b"] if split.mode == "separate" else ["input_ids"]
    real = computed = 0
    for name in names:
        lens = split.row_lengths(name)
        for b in batches:
            lb = lens[b]
            if len(lb):
                real += int(lb.sum())
                computed += len(lb) * int(lb.max())
    return real, computed
