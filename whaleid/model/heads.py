"""Margin heads for metric learning.

* ``ArcFace`` -- additive angular margin (Deng et al. 2019): the target logit is ``scale * cos(theta + m)``,
  every other logit ``scale * cos(theta)``. With ``easy_margin`` the margin is applied only where
  ``cos(theta) > 0``; otherwise, past ``theta + m > pi`` the target logit continues as
  ``cos(theta) - m * sin(m)`` so that it stays monotonic.
* Sub-centres (Deng et al. 2020): ``subcenters = k`` gives each class ``k`` centres; a class's cosine is the
  largest of its ``k``, so a noisy or two-sided class need not squeeze into one centre.
* Per-class margins: ``margins`` is a buffer (C,), by default the constant ``margin``; :func:`dynamic_margins`
  makes it larger for rare classes, as in the Google Landmark and Happywhale winning solutions.
* ``margin_factor`` scales every margin (0 -> plain softmax over cosines); the trainer ramps it from 0 to 1
  for a margin warm-up.

The cosine and ``sqrt(1 - cos^2)`` are computed in float32 and clamped, so mixed precision cannot make NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def dynamic_margins(counts: np.ndarray, low: float, high: float, power: float = 0.25) -> np.ndarray:
    """Margin per class from its training image count ``n``: ``n ** -power`` mapped linearly so the rarest class
    gets ``high`` and the most frequent ``low``. Classes with no training image get ``high``."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    x = counts**-power
    lo, hi = x.min(), x.max()
    if hi - lo < 1e-12:
        return np.full(len(counts), high, dtype=np.float32)
    return (low + (high - low) * (x - lo) / (hi - lo)).astype(np.float32)


class ArcFace(nn.Module):
    """ArcFace head: ``subcenters`` centre(s) per class on the unit sphere and a margin on the target angle."""

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        *,
        scale: float = 30.0,
        margin: float = 0.3,
        easy_margin: bool = False,
        subcenters: int = 1,
    ) -> None:
        super().__init__()
        self.n_classes, self.subcenters = n_classes, subcenters
        self.weight = nn.Parameter(torch.empty(n_classes * subcenters, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale
        self.easy_margin = easy_margin
        self.register_buffer("margins", torch.full((n_classes,), float(margin)))
        self.margin_factor = 1.0

    def set_margins(self, margins: np.ndarray | torch.Tensor) -> None:
        self.margins.copy_(torch.as_tensor(np.asarray(margins), dtype=torch.float32))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine of each embedding to each class (the best of its sub-centres), float32 (N, C)."""
        cos = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))
        if self.subcenters > 1:
            cos = cos.view(-1, self.n_classes, self.subcenters).amax(dim=2)
        return cos

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled logits with the angular margin on each row's target class."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings).clamp(-1.0, 1.0)
            target = cos.gather(1, labels[:, None])
            m = (self.margins[labels] * self.margin_factor)[:, None]
            sin = torch.sqrt((1.0 - target * target).clamp(min=1e-7))
            phi = target * torch.cos(m) - sin * torch.sin(m)
            if self.easy_margin:
                phi = torch.where(target > 0, phi, target)
            else:
                phi = torch.where(target > torch.cos(math.pi - m), phi, target - torch.sin(math.pi - m) * m)
            return self.scale * cos.scatter(1, labels[:, None], phi)
