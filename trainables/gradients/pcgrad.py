from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from trainables.gradients.base import GradientRule


class PCGrad(GradientRule):
    """Gradient surgery (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning").

    For the parameters every task shares (the encoder), each task's gradient g_i is projected
    onto the normal plane of any other task's gradient g_j it conflicts with (g_i·g_j < 0),
    in a random task order, and the projected gradients are summed. Task-specific parameters
    (heads, loss weights) get their ordinary gradient. Needs steps holding several tasks
    (schedule round_robin_sum).

    Args:
        seed: seeds the random task order of each step.
    """

    needs_multi_task_steps = True
    manual_sync = True

    def __init__(self, *, seed: int = 0) -> None:
        self._gen = torch.Generator().manual_seed(seed)

    def backward(self, accelerator, model: nn.Module, task_losses: dict[str, torch.Tensor]) -> None:
        core = accelerator.unwrap_model(model)
        shared = [p for p in core.encoder.parameters() if p.requires_grad]
        shared_ids = {id(p) for p in shared}
        own = [p for p in core.parameters() if p.requires_grad and id(p) not in shared_ids]
        losses = list(task_losses.values())
        total = sum(losses)
        if shared and len(losses) > 1:
            grads = [self._flat_grad(loss, shared) for loss in losses]
            merged = self._project(grads)
            offset = 0
            for p in shared:
                n = p.numel()
                p.grad = merged[offset : offset + n].view_as(p).to(p.dtype)
                offset += n
            targets = own
        else:
            targets = shared + own
        if targets:
            used = [p for p in targets if p.requires_grad]
            grads = torch.autograd.grad(total, used, allow_unused=True)
            for p, g in zip(used, grads):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            for p in core.parameters():
                if p.requires_grad:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                    p.grad /= world

    @staticmethod
    def _flat_grad(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return torch.cat(
            [(g if g is not None else torch.zeros_like(p)).flatten() for p, g in zip(params, grads)]
        ).float()

    def _project(self, grads: list[torch.Tensor]) -> torch.Tensor:
        projected = []
        for i, g in enumerate(grads):
            g = g.clone()
            order = torch.randperm(len(grads), generator=self._gen).tolist()
            for j in order:
                if j == i:
                    continue
                dot = torch.dot(g, grads[j])
                if dot < 0:
                    g -= dot / grads[j].pow(2).sum().clamp_min(1e-20) * grads[j]
            projected.append(g)
        return torch.stack(projected).sum(0)
