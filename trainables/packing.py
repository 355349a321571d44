"""Packed encoding: the encoder runs on a batch's real tokens only, with no padding.

A bucketed batch still pads each row to the batch's longest, and a padded encoder spends its
matrix products and attention on those positions too (a quarter of the tokens of a BERT-base
batch of 1024 on the CS224N data). With `Runtime(attention="packed")` the batch's rows are
laid end to end as one sequence of T real tokens, each row keeping its own position ids;
attention stays within a row through variable-length attention:
`torch.nn.attention.varlen.varlen_attn` (Flash Attention) on a GPU in bf16/fp16, and, on the
CPU or in fp32, PyTorch's SDPA over the rows padded again (exact, for tests and CPU runs;
not faster there).

With `Runtime(attention="packed_flex")` attention on a GPU is FlexAttention over the whole
packed sequence with a block-diagonal mask (a token sees the tokens of its own row): its
kernel works in tiles of 128 queries × 128 keys and skips the tiles that hold no pair of the
same row, so many short rows share a tile. Variable-length Flash Attention computes each
(row, head) pair as its own tile instead, mostly empty for rows of a few dozen tokens; on an
H100 its backward took 30 % of a packed BERT-base step at batch 1024. The tiles each block of
queries needs are found on the host (`Packing.of(mask, blocks=True)`), so the step still
never waits for the GPU. FlexAttention has no CPU backward: on the CPU this runs as "packed".

The encoder is the usual Hugging Face model, run with the attention implementation
registered here (`PACKED`, `PACKED_FLEX`); `MultiTaskModel.embed` packs the rows, and pools the packed states
back into one embedding per row. Variable-length attention has no attention-probability
dropout: a packed trial needs `encoder.attention_dropout: 0`.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from trainables.runtime import host_to_device

PACKED = "mtsweep_packed"  # the attention implementation's name in Hugging Face's registry
PACKED_FLEX = "mtsweep_packed_flex"  # the same, with FlexAttention on a GPU
FLEX_BLOCK = 128  # FlexAttention's tile: queries × keys


@dataclass(frozen=True)
class Packing:
    """Where a padded (B, L) batch's real tokens sit once laid end to end (T of them)."""

    keep: torch.Tensor  # (B, L) bool: the real tokens of the padded batch
    index: torch.Tensor  # (T,) positions of the real tokens in the flattened (B·L) batch
    row: torch.Tensor  # (T,) the row each real token belongs to
    cu_seqlens: torch.Tensor  # (B+1,) int32 offsets of the rows in the packed sequence
    rows: int  # B
    width: int  # L: the padded width, an upper bound of every row's length
    # FlexAttention's tiles (`blocks=True`): per block of FLEX_BLOCK queries, how many key
    # blocks hold tokens of its rows, (1, 1, n), and which, (1, 1, n, n); int32.
    kv_blocks: torch.Tensor | None = None
    kv_indices: torch.Tensor | None = None
    block_mask: object = None  # FlexAttention's BlockMask, on the GPU (`with_block_mask`)

    TENSORS = ("keep", "index", "row", "cu_seqlens", "kv_blocks", "kv_indices")

    @classmethod
    def of(cls, mask: torch.Tensor, blocks: bool = False) -> Packing:
        """The packing of a (B, L) attention mask, on the mask's device (with FlexAttention's
        tiles when `blocks`). On a GPU this waits for the mask (the packed length T is
        data-dependent): build it from the host's mask and move it with `to` instead
        (`MultiTaskModel.packing`, as training does)."""
        keep = mask.bool()
        rows, width = keep.shape
        index = keep.flatten().nonzero().squeeze(1)  # waits for the mask: T is data-dependent
        lengths = keep.sum(1, dtype=torch.int32)
        cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        tiles = _row_tiles(cu_seqlens, index.numel()) if blocks else (None, None)
        return cls(keep=keep, index=index, row=torch.div(index, width, rounding_mode="floor"),
                   cu_seqlens=cu_seqlens, rows=rows, width=width, kv_blocks=tiles[0],
                   kv_indices=tiles[1])

    def to(self, device: torch.device | str) -> Packing:
        """The packing on `device`; to a GPU through page-locked memory, without waiting."""
        device = torch.device(device)
        return replace(self, **{name: host_to_device(getattr(self, name), device)
                                for name in self.TENSORS if getattr(self, name) is not None})

    def with_block_mask(self) -> Packing:
        """The packing with FlexAttention's block mask over its T tokens: each token attends
        to the tokens of its own row (built from the tiles, no wait on the GPU)."""
        from torch.nn.attention.flex_attention import BlockMask

        if self.kv_blocks is None:
            raise ValueError("the packing has no FlexAttention tiles: build it with "
                             "Packing.of(mask, blocks=True)")
        total = self.index.shape[0]
        mask = BlockMask.from_kv_blocks(self.kv_blocks, self.kv_indices, BLOCK_SIZE=FLEX_BLOCK,
                                        mask_mod=_same_row(self.row), seq_lengths=(total, total))
        return replace(self, block_mask=mask)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, …) → (1, T, …)."""
        return x.flatten(0, 1)[self.index].unsqueeze(0)

    def positions(self) -> torch.Tensor:
        """(1, T) position ids: each row counts from 0 (rows are left-aligned)."""
        return self.pack(self.keep.long().cumsum(1) - 1)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(T, …) → (B, L, …), zeros at the padding."""
        out = x.new_zeros((self.rows * self.width, *x.shape[1:]))
        return out.index_copy(0, self.index, x).unflatten(0, (self.rows, self.width))

    def pool(self, states: torch.Tensor, mode: str) -> torch.Tensor:
        """(1, T, H) packed token states → (B, H): each row's first token or its mean."""
        states = states.squeeze(0)
        if mode == "cls":
            return states[self.cu_seqlens[:-1].long()]
        total = states.new_zeros((self.rows, states.shape[-1])).index_add(0, self.row, states)
        lengths = self.cu_seqlens.diff().clamp_min(1).unsqueeze(1).to(states.dtype)
        return total / lengths


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                     scaling: float | None = None, packing: Packing | None = None, **kwargs):
    """Hugging Face attention interface: (1, heads, T, d) packed q/k/v → (1, T, heads, d),
    each token attending only to the tokens of its own row."""
    if packing is None:
        raise RuntimeError("the packed encoder was called without its packing "
                           "(MultiTaskModel.embed passes it)")
    if dropout:
        raise RuntimeError("packed attention has no attention dropout; set "
                           "encoder.attention_dropout: 0")
    if packing.block_mask is not None:  # FlexAttention over the packed sequence
        out = _flex(query)(query, key, value, block_mask=packing.block_mask, scale=scaling)
        return out.transpose(1, 2), None
    q, k, v = (t.squeeze(0).transpose(0, 1) for t in (query, key, value))  # (T, heads, d)
    varlen = _VARLEN[0] if _VARLEN and _kernel_runs(q) else None
    if varlen is None:
        return _padded_attention(q, k, v, packing, scaling).unsqueeze(0), None
    # No Python arithmetic on the shapes here: under torch.compile they are symbolic, and a
    # comparison of them would break the graph in every layer.
    out = varlen(q, k, v, packing.cu_seqlens, packing.cu_seqlens, packing.width,
                 packing.width, scale=scaling)
    return out.unsqueeze(0), None


def _row_tiles(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexAttention's tiles of a block-diagonal mask over `total` packed tokens whose rows
    start at `cu_seqlens`: for each block of FLEX_BLOCK queries, the key blocks from the one
    holding the start of its first row to the one holding the end of its last row."""
    n = max(1, -(-total // FLEX_BLOCK))
    starts, ends = cu_seqlens[:-1].long(), cu_seqlens[1:].long()
    first = torch.arange(n, device=cu_seqlens.device) * FLEX_BLOCK
    last = (first + FLEX_BLOCK).clamp(max=max(total, 1)) - 1
    lo = starts[torch.searchsorted(ends, first, right=True).clamp(max=len(starts) - 1)]
    hi = ends[torch.searchsorted(ends, last, right=True).clamp(max=len(ends) - 1)] - 1
    lo, hi = lo // FLEX_BLOCK, hi.clamp(min=0) // FLEX_BLOCK
    count = hi - lo + 1
    step = torch.arange(n, device=cu_seqlens.device)
    indices = torch.where(step < count[:, None], lo[:, None] + step, 0)
    return count.int().view(1, 1, n), indices.int().view(1, 1, n, n)


def _same_row(row: torch.Tensor):
    def mask_mod(b, h, q, kv):
        return row[q] == row[kv]

    return mask_mod


_FLEX: dict = {}


def _flex(query: torch.Tensor):
    """FlexAttention: compiled on a GPU (its eager form is a slow reference; inside a compiled
    encoder torch.compile fuses it into the encoder's graph), eager on the CPU (forward only
    there; used by tests)."""
    from torch.nn.attention.flex_attention import flex_attention

    if not query.is_cuda or torch.compiler.is_compiling():
        return flex_attention
    if "compiled" not in _FLEX:
        _FLEX["compiled"] = torch.compile(flex_attention, dynamic=True)
    return _FLEX["compiled"]


def _kernel_runs(q: torch.Tensor) -> bool:
    """Flash Attention's kernels: CUDA, bf16/fp16."""
    return q.is_cuda and q.dtype in (torch.bfloat16, torch.float16)


# PyTorch's variable-length attention, looked up once by `register` (outside compiled code).
_VARLEN: list = []


def _find_varlen():
    """PyTorch's public variable-length attention where it takes a `scale`, else ATen's
    differentiable Flash Attention op that it wraps (`_flash_attention_forward`; both train
    BERT-base on an H100 at the same speed)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        pass
    else:
        if "scale" in inspect.signature(varlen_attn).parameters:  # not in its first release
            return varlen_attn
    if hasattr(torch.ops.aten, "_flash_attention_forward"):
        return _aten_varlen
    warnings.warn(f"torch {torch.__version__} has no variable-length attention: packed "
                  "attention runs on the rows padded again on the GPU too (correct, not "
                  "faster)", stacklevel=3)
    return None


def _aten_varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale=None):
    return torch.ops.aten._flash_attention_forward(q, k, v, cu_q, cu_k, max_q, max_k, 0.0, False,
                                                   False, scale=scale)[0]


def _padded_attention(q, k, v, packing: Packing, scaling: float | None) -> torch.Tensor:
    """The same result through SDPA on the rows padded again (CPU, fp32)."""
    qp, kp, vp = (packing.unpack(t).transpose(1, 2) for t in (q, k, v))  # (B, heads, L, d)
    mask = packing.keep.view(packing.rows, 1, 1, packing.width)
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2).flatten(0, 1)[packing.index]


def register() -> None:
    """Make `PACKED` known to Hugging Face (idempotent)."""
    from transformers import AttentionInterface

    if not _VARLEN:
        _VARLEN.append(_find_varlen())
    AttentionInterface.register(PACKED, packed_attention)
    AttentionInterface.register(PACKED_FLEX, packed_attention)
