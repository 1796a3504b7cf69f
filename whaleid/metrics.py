"""MAP@5 as Kaggle scores it: each image's score is 1/rank of its true label in its five predictions (0 if
absent; only the first occurrence counts), averaged over images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def precision_at_5(predictions: Sequence[str], truth: str) -> float:
    """Score of one image: ``1 / (rank + 1)`` of ``truth`` among the first five predictions, else 0."""
    for rank, label in enumerate(list(predictions)[:5]):
        if label == truth:
            return 1.0 / (rank + 1)
    return 0.0


def map_at_5(predictions: Sequence[Sequence[str]], truths: Sequence[str]) -> float:
    """Mean of :func:`precision_at_5` over images."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} truths")
    if not truths:
        raise ValueError("no images to score")
    return float(np.mean([precision_at_5(p, t) for p, t in zip(predictions, truths, strict=True)]))
