"""What every training here steps with besides its optimiser: the learning-rate schedule (per-step linear warm-up,
then cosine decay), gradient clipping, and which parameters train (the frozen leading modules, the two LR groups)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from whaleid.config import TrainConfig


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


def frozen_modules(model: nn.Module, share: float) -> list[nn.Module]:
    """The backbone's leading modules holding the first ``share`` of its parameters (by count, in module order):
    what ``train.freeze`` keeps as it starts. Their parameters get no gradient, and their BatchNorm layers stay
    in eval mode, so a pretrained start's early features and statistics stay what they were."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or share <= 0:
        return []
    leaves = [m for m in backbone.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    total = sum(p.numel() for m in leaves for p in m.parameters(recurse=False))
    out, seen = [], 0
    for m in leaves:
        if seen >= share * total:
            break
        out.append(m)
        seen += sum(p.numel() for p in m.parameters(recurse=False))
    return out


def freeze(modules: Sequence[nn.Module]) -> None:
    """Stop gradients to ``modules`` and keep them in eval mode (again after each ``model.train()``)."""
    for m in modules:
        m.requires_grad_(False)
        m.eval()  # BatchNorm: the running statistics of the start, not of these batches


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, object]]:
    """AdamW's groups: the backbone's trainable parameters at ``cfg.lr``, the rest (neck, head, GeM) at ``cfg.head_lr``."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    return [{"params": backbone, "lr": cfg.lr}, {"params": rest, "lr": cfg.head_lr}]
