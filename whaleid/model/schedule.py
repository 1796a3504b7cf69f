"""What every training here steps with besides its optimiser: the learning-rate schedule (per-step linear warm-up,
then cosine decay) and gradient clipping."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up from ~0 to 1 over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def clip_gradients(params: Sequence[nn.Parameter], max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_(params, max_norm, foreach=True)``, the same values: the gradients scaled by
    ``min(max_norm / (norm + 1e-6), 1)``, where ``norm`` is their total 2-norm. On a CPU the scaling is skipped when
    that factor is 1 (multiplying by 1 changes nothing, and there it costs no device sync to know); torch always
    multiplies. Both calls take every gradient at once (``foreach``: torch picks the per-tensor loop on CPUs)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = nn.utils.get_total_norm(grads, foreach=True)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    if total.device.type != "cpu" or coef < 1:
        torch._foreach_mul_(grads, coef)
