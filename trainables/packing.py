"""Packed encoding: the encoder runs on a batch's real tokens only, with no padding.

A bucketed batch still pads each row to the batch's longest, and a padded encoder spends its
matrix products and attention on those positions too (a quarter of the tokens of a BERT-base
batch of 1024 on the CS224N data). With `Runtime(attention="packed")` the batch's rows are
laid end to end as one sequence of T real tokens, each row keeping its own position ids;
attention stays within a row through variable-length attention:
`torch.nn.attention.varlen.varlen_attn` (Flash Attention) on a GPU in bf16/fp16, and, on the
CPU or in fp32, PyTorch's SDPA over the rows padded again (exact, for tests and CPU runs;
not faster there).

The encoder is the usual Hugging Face model, run with the attention implementation
registered here (`PACKED`); `MultiTaskModel.embed` packs the rows, and pools the packed states
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


@dataclass(frozen=True)
class Packing:
    """Where a padded (B, L) batch's real tokens sit once laid end to end (T of them)."""

    keep: torch.Tensor  # (B, L) bool: the real tokens of the padded batch
    index: torch.Tensor  # (T,) positions of the real tokens in the flattened (B·L) batch
    row: torch.Tensor  # (T,) the row each real token belongs to
    cu_seqlens: torch.Tensor  # (B+1,) int32 offsets of the rows in the packed sequence
    rows: int  # B
    width: int  # L: the padded width, an upper bound of every row's length

    @classmethod
    def of(cls, mask: torch.Tensor) -> Packing:
        """The packing of a (B, L) attention mask, on the mask's device. On a GPU this waits
        for the mask (the packed length T is data-dependent): build it from the host's mask
        and move it with `to` instead (`MultiTaskModel.packing`, as training does)."""
        keep = mask.bool()
        rows, width = keep.shape
        index = keep.flatten().nonzero().squeeze(1)  # waits for the mask: T is data-dependent
        lengths = keep.sum(1, dtype=torch.int32)
        return cls(keep=keep, index=index, row=torch.div(index, width, rounding_mode="floor"),
                   cu_seqlens=F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0)),
                   rows=rows, width=width)

    def to(self, device: torch.device | str) -> Packing:
        """The packing on `device`; to a GPU through page-locked memory, without waiting."""
        device = torch.device(device)
        return replace(self, **{name: host_to_device(getattr(self, name), device)
                                for name in ("keep", "index", "row", "cu_seqlens")})

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
    q, k, v = (t.squeeze(0).transpose(0, 1) for t in (query, key, value))  # (T, heads, d)
    varlen = _VARLEN[0] if _VARLEN and _kernel_runs(q) else None
    if varlen is None:
        return _padded_attention(q, k, v, packing, scaling).unsqueeze(0), None
    # No Python arithmetic on the shapes here: under torch.compile they are symbolic, and a
    # comparison of them would break the graph in every layer.
    out = varlen(q, k, v, packing.cu_seqlens, packing.cu_seqlens, packing.width,
                 packing.width, scale=scaling)
    return out.unsqueeze(0), None


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
