"""Per-image transforms run by the loader.

* :class:`AsUint8` (evaluation, and training with ``augment.backend: torch``): resize to ``img_size`` if the image
  is not that size already (the ``resize`` stage makes it so) and return it as a uint8 (H, W, 3) tensor. The
  float conversion, augmentation and normalisation happen on the device, a batch at a time
  (:mod:`whaleid.model.augment`), so the loader does almost nothing but decode.
* :func:`train_transform` (``augment.backend: albumentations``): albumentations per image
  (:mod:`whaleid.model.per_image`, imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from whaleid.config import AugmentConfig

if TYPE_CHECKING:
    from whaleid.model.per_image import Albumentations


class AsUint8:
    """RGB uint8 (H, W, 3) array -> uint8 (img_size, img_size, 3) tensor; area interpolation when resizing."""

    def __init__(self, img_size: int) -> None:
        self.img_size = img_size

    @property
    def passthrough_size(self) -> int:
        """Photos of this size come out as they are: :meth:`whaleid.data.images.ImageDataset.batch` may read them
        straight into the batch without calling the transform."""
        return self.img_size

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if image.shape[:2] != (self.img_size, self.img_size):
            image = cv2.resize(image, (self.img_size, self.img_size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(image))


def train_transform(img_size: int, aug: AugmentConfig, seed: int = 0) -> Albumentations:
    """The albumentations pipeline of ``aug`` for ``img_size`` photos, re-seedable per item (see
    :mod:`whaleid.model.per_image`, which this imports)."""
    from whaleid.model.per_image import albumentations_transform

    return albumentations_transform(img_size, aug, seed)
