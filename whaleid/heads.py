"""Margin heads for metric learning.

* ``arcface`` -- additive angular margin (Deng et al. 2019): the target logit is ``scale * cos(theta + margin)``,
  every other logit ``scale * cos(theta)``. With ``easy_margin`` the margin is applied only where
  ``cos(theta) > 0``; otherwise, past ``theta + margin > pi`` the target logit continues as
  ``cos(theta) - margin * sin(margin)`` so that it stays monotonic.

The cosine and ``sqrt(1 - cos^2)`` are computed in float32 and clamped, so mixed precision cannot make NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ArcFace(nn.Module):
    """ArcFace head: class-centre weights on the unit sphere and a margin on the target angle."""

    def __init__(self, in_features: int, n_classes: int, scale: float = 30.0, margin: float = 0.3,
                 easy_margin: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale
        self.margin = margin
        self.easy_margin = easy_margin
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each embedding to each class centre, float32 (N, C)."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled logits with the angular margin on each row's target class."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings).clamp(-1.0, 1.0)
            sin = torch.sqrt((1.0 - cos * cos).clamp(min=1e-7))
            phi = cos * self.cos_m - sin * self.sin_m
            if self.easy_margin:
                phi = torch.where(cos > 0, phi, cos)
            else:
                phi = torch.where(cos > self.th, phi, cos - self.mm)
            one_hot = F.one_hot(labels, num_classes=cos.shape[1]).to(cos.dtype)
            return self.scale * (one_hot * phi + (1.0 - one_hot) * cos)
