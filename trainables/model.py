"""The multi-task model: one shared encoder, a pooling step, one head and one loss per task."""

from __future__ import annotations

import torch
from torch import nn

from trainables.config import TrialConfig
from trainables.errors import ConfigError
from trainables.heads import HEADS
from trainables.losses import LOSSES
from trainables.packing import PACKED, PACKED_FLEX, Packing
from trainables.tasks import TASKS
from trainables.weighting import WEIGHTINGS

# A task's batch: its tensors, and for a packed encoder optionally its "packing".
Batch = dict[str, torch.Tensor | Packing]


class Pooling(nn.Module):
    """(batch, seq, hidden) token states + mask → (batch, hidden) sentence embedding."""

    MODES = ("cls", "mean")

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ConfigError(f"encoder.pooling: {mode!r}; valid: {', '.join(self.MODES)}")
        self.mode = mode

    def forward(self, states: torch.Tensor, mask: torch.Tensor | Packing) -> torch.Tensor:
        if isinstance(mask, Packing):  # (1, T, hidden) packed states
            return mask.pool(states, self.mode)
        if self.mode == "cls":
            return states[:, 0]
        m = mask.unsqueeze(-1).to(states.dtype)
        return (states * m).sum(1) / m.sum(1).clamp_min(1.0)


class MultiTaskModel(nn.Module):
    """Encoder + per-task heads, losses and the loss weighting.

    `forward(step)` takes the batches of one optimizer step, {task: batch}, and returns
    {"outputs": {task: (B, k)}, "losses": {task: raw loss}, "weighted": {task: weighted loss}}.
    Losses are computed inside forward so that DDP sees every parameter that takes part.
    """

    def __init__(self, config: TrialConfig, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        if config.encoder.fine_tune == "frozen":
            encoder.requires_grad_(False)
        self.pooling = Pooling(config.encoder.pooling)
        # Hugging Face's attention implementation of the encoder ("sdpa", "eager", PACKED, …).
        self.attention = getattr(encoder.config, "_attn_implementation", None)
        self.packed = self.attention in (PACKED, PACKED_FLEX)
        self.flex = self.attention == PACKED_FLEX  # FlexAttention's tiles in each packing
        if self.packed and config.encoder.attention_dropout:
            raise ConfigError(
                "encoder.attention_dropout: packed attention has "
                f"no attention dropout; set it to 0 (got {config.encoder.attention_dropout})")
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict()
        self.losses = nn.ModuleDict()
        for name, tc in config.tasks.items():
            key = f"tasks.{name}"
            loss = LOSSES.build(tc.loss, TASKS[name], key=f"{key}.loss_args", **tc.loss_args)
            head = HEADS.build(
                tc.head, hidden, loss.num_outputs, config.encoder.hidden_dropout,
                key=f"{key}.head_args", **tc.head_args,
            )
            loss.bind_output_range(head.output_range)
            self.heads[name] = head
            self.losses[name] = loss
        weights = {t: tc.weight for t, tc in config.tasks.items()}
        self.weighting = WEIGHTINGS.build(
            config.weighting.name, weights, key="weighting.args", **config.weighting.args
        )

    def input_mode(self, task: str) -> str:
        return self.heads[task].input_mode

    def embed(
        self, input_ids: torch.Tensor, mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
        packing: Packing | None = None,
    ) -> torch.Tensor:
        """(B, L) token ids → (B, hidden) pooled embeddings. A packed encoder takes the batch's
        `packing` when the caller has built it (see `packing`), else builds it from `mask`."""
        if self.packed:  # only the real tokens, laid end to end (trainables.packing)
            packing = packing if packing is not None else Packing.of(mask, blocks=self.flex)
            if self.flex and mask.is_cuda:  # FlexAttention (it has no CPU backward)
                packing = packing.with_block_mask()
            states = self.encoder(
                input_ids=packing.pack(input_ids), position_ids=packing.positions(),
                token_type_ids=None if token_type_ids is None else packing.pack(token_type_ids),
                packing=packing,
            ).last_hidden_state
            return self.pooling(states, packing)
        states = self.encoder(
            input_ids=input_ids, attention_mask=self._attention_mask(mask),
            token_type_ids=token_type_ids,
        ).last_hidden_state
        return self.pooling(states, mask)

    def _attention_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The (B, L) padding mask as the (B, 1, L, L) mask the encoder's attention takes.

        Given the 2D mask, Hugging Face's SDPA path reads it back (`mask.all()`) to drop it
        when nothing is padded: on a GPU that waits for every queued kernel, at every encoder
        call. A 4D mask is used as it is, so the step never waits; the cost is that an
        unpadded batch runs SDPA's masked kernel rather than Flash Attention."""
        rows, width = mask.shape
        keep = mask.bool()[:, None, None, :].expand(rows, 1, width, width)
        if self.attention == "sdpa":
            return keep
        if self.attention == "eager":  # additive, in the dtype Hugging Face builds it in
            dtype = self.encoder.get_input_embeddings().weight.dtype
            return torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill(
                ~keep, torch.finfo(dtype).min)
        return mask

    def encoder_inputs(self, task: str, batch: Batch) -> tuple[torch.Tensor, ...]:
        """(input_ids, attention_mask, token_type_ids or None) of the one encoder pass a task's
        batch takes: a bi-encoder's two sentences padded to a common length and stacked."""
        if self.heads[task].input_mode == "separate":
            return _stacked(batch, "input_ids"), _stacked(batch, "attention_mask"), None
        return batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")

    def packing(self, task: str, batch: Batch) -> Packing | None:
        """A packed encoder's packing of a task's batch, built where the batch is (None when
        the encoder is not packed). Built on the host before the batch goes to a GPU, the
        step needs no wait on the GPU: the packed length is data-dependent, and finding it
        from the mask on the device waits for every queued kernel (see `Packing.of`)."""
        if not self.packed:
            return None
        separate = self.heads[task].input_mode == "separate"
        return Packing.of(_stacked(batch, "attention_mask") if separate
                          else batch["attention_mask"], blocks=self.flex)

    def task_outputs(self, task: str, batch: Batch) -> torch.Tensor:
        """The head's (B, k) outputs for one task's batch (which may carry its `packing`)."""
        head = self.heads[task]
        ids, mask, token_type_ids = self.encoder_inputs(task, batch)
        emb = self.embed(ids, mask, token_type_ids, batch.get("packing"))
        if head.input_mode == "separate":
            n = batch["input_ids_a"].shape[0]
            return head(emb[:n], emb[n:])
        return head(emb)

    def forward(self, step: dict[str, Batch]) -> dict[str, dict[str, torch.Tensor]]:
        outputs = {t: self.task_outputs(t, b) for t, b in step.items()}
        losses = {
            t: self.losses[t](outputs[t], b["labels"]) for t, b in step.items() if "labels" in b
        }
        return {"outputs": outputs, "losses": losses, "weighted": self.weighting(losses)}

    @torch.no_grad()
    def predict(self, task: str, batch: Batch) -> torch.Tensor:
        """(B,) predictions in label space: class ids, or scores in the task's range."""
        return self.losses[task].predict(self.task_outputs(task, batch))


def _stacked(batch: Batch, key: str) -> torch.Tensor:
    """A bi-encoder batch's `key`_a over `key`_b, padded to a common width: (2B, L)."""
    a, b = batch[f"{key}_a"], batch[f"{key}_b"]
    width = max(a.shape[1], b.shape[1])
    return torch.cat([_pad(a, width), _pad(b, width)])


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return nn.functional.pad(x, (0, width - x.shape[1])) if x.shape[1] < width else x
