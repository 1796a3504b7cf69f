"""Reference baselines, scored exactly like the model's submission.

* constant: ``new_individual`` followed by the four most frequent training individuals, for every image;
* raw pixels: cosine kNN on downscaled, per-image standardised RGB pixels, with its own CV-tuned threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from joblib import Parallel, delayed

from whaleid.core.runtime import Runtime
from whaleid.data.images import read_image
from whaleid.data.layout import NEW_INDIVIDUAL
from whaleid.rule.candidates import most_frequent


def _features(paths: Sequence[Path], size: int) -> np.ndarray:
    out = np.empty((len(paths), size * size * 3), dtype=np.float32)
    for i, p in enumerate(paths):
        img = cv2.resize(read_image(p), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        img -= img.mean()
        out[i] = img / (np.linalg.norm(img) + 1e-6)
    return out


def pixel_features(paths: Sequence[str | Path], size: int, run: Runtime = Runtime()) -> np.ndarray:
    """(N, size*size*3) L2-normalised raw-pixel vectors."""
    paths = [Path(p) for p in paths]
    chunks = [paths[i : i + 512] for i in range(0, len(paths), 512)]
    parts = Parallel(n_jobs=run.n_jobs)(delayed(_features)(c, size) for c in chunks)
    return np.concatenate(parts) if parts else np.zeros((0, size * size * 3), np.float32)


def constant_predictions(train_ids: Sequence[str], n: int) -> list[str]:
    """``new_individual`` + the four most frequent ids (ties by id), repeated ``n`` times."""
    return [" ".join([NEW_INDIVIDUAL, *most_frequent(np.asarray(train_ids), 4)])] * n
