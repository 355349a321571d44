"""Where and how a trial runs (never what it compares): devices, precision, threads, paths."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# The encoder's attention implementations (`Runtime.attention`), as the CLI and sweep files
# name them.
ATTENTIONS = ("auto", "sdpa", "eager", "packed", "packed_flex")
# Those that run the encoder on the real tokens only (`trainables.packing`): no attention dropout.
PACKED_ATTENTIONS = ("packed", "packed_flex")


@dataclass(frozen=True)
class Runtime:
    # None: a GPU when one is visible, else the CPU. True forces the CPU.
    cpu: bool | None = None
    # "auto": bf16 on a GPU that supports it, fp32 elsewhere.
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    # Attention of the encoder: "auto" = PyTorch SDPA (scaled_dot_product_attention) with, on
    # a GPU, its flash / memory-efficient kernels; "sdpa" = SDPA with PyTorch's own kernel
    # choice (cuDNN first on recent GPUs); "eager" = the model's plain matmul-softmax code;
    # "packed" = the encoder runs on the real tokens only, no padding, with variable-length
    # flash attention on a GPU (`trainables.packing`; needs encoder.attention_dropout 0);
    # "packed_flex" = the same with FlexAttention's block-diagonal masking on a GPU, which
    # computes many short rows per tile.
    attention: Literal["auto", "sdpa", "eager", "packed", "packed_flex"] = "auto"
    # Compile the encoder with torch.compile (TorchInductor kernels; worth its start-up of a
    # minute or more on long GPU trials, not on short CPU ones).
    compile: bool = False
    # torch intra-op threads per process; None leaves PyTorch's default.
    num_threads: int | None = None
    # Tokenized-data cache (Arrow files); default $MTSWEEP_CACHE or ~/.cache/mtsweep.
    cache_dir: str | None = None
    # Results of the trial (config, metrics, confusion matrices, predictions, final model).
    out_dir: str | None = None
    # Per-epoch training state for resuming; default <out_dir>/checkpoints when out_dir is set.
    checkpoint_dir: str | None = None
    # An epoch checkpoint folder (…/epoch-N) to continue from.
    resume_from: str | None = None
    # How many epoch checkpoints to keep (the newest).
    keep_checkpoints: int = 1
    # Training progress lines per epoch (0: none).
    progress_lines: int = 4
    # Check the loss for NaN/inf every this many steps (each check syncs with the device).
    nan_check_every: int = 10

    def on_cpu(self) -> bool:
        """Whether the trial runs on the CPU: forced, or no GPU visible."""
        if self.cpu is not None:
            return self.cpu
        import torch

        return not torch.cuda.is_available()

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        env = os.environ.get("MTSWEEP_CACHE")
        return Path(env) if env else Path.home() / ".cache" / "mtsweep"

    def resolved_checkpoint_dir(self) -> Path | None:
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        return Path(self.out_dir) / "checkpoints" if self.out_dir else None


def host_to_device(tensor, device):
    """A host tensor on `device` (a torch.device). To a GPU through page-locked memory, without
    waiting: a copy from ordinary memory first waits for all queued GPU work, which would leave
    the GPU idle while Python prepares each next step."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
