"""The per-image augmentation backend (``augment.backend: albumentations``), imported only when it is chosen
(:func:`whaleid.model.transforms.train_transform`): albumentations costs a quarter of a second to import, which
``whaleid identify`` and the stages that do not train would pay for nothing.

albumentations per image: resize -> [horizontal flip] -> [affine: rotate, scale, translate] -> [brightness/contrast]
-> [gaussian blur] -> [coarse dropout] -> normalise (ImageNet mean/std) -> CHW float tensor. A probability of 0
leaves a transform out.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from whaleid.config import AugmentConfig
from whaleid.model.augment import BLUR_SIZES, HOLE_SIZE, MAX_HOLES, MEAN, STD


class ToCHW(A.ImageOnlyTransform):
    """HWC float image to a contiguous CHW float32 tensor (avoids the torchvision-dependent ToTensorV2)."""

    def __init__(self) -> None:
        super().__init__(p=1.0)

    def apply(self, img: np.ndarray, **params: object) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


class Albumentations:
    """An albumentations pipeline as a per-image callable ``image -> tensor``, re-seedable per item."""

    def __init__(self, compose: A.Compose) -> None:
        self.compose = compose

    def set_random_seed(self, seed: int) -> None:
        self.compose.set_random_seed(seed)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.compose(image=image)["image"]


def albumentations_transform(img_size: int, aug: AugmentConfig, seed: int = 0) -> Albumentations:
    steps: list[A.BasicTransform] = [A.Resize(img_size, img_size, interpolation=cv2.INTER_AREA)]
    if aug.hflip > 0:
        steps.append(A.HorizontalFlip(p=aug.hflip))
    if aug.affine > 0:
        steps.append(
            A.Affine(
                scale=(aug.scale_min, aug.scale_max),
                translate_percent=(-aug.translate, aug.translate),
                rotate=(-aug.rotate, aug.rotate),
                border_mode=cv2.BORDER_REFLECT_101,
                p=aug.affine,
            )
        )
    if aug.color > 0:
        steps.append(A.RandomBrightnessContrast(aug.brightness, aug.contrast, p=aug.color))
    if aug.blur > 0:
        steps.append(A.GaussianBlur(blur_limit=BLUR_SIZES, p=aug.blur))
    if aug.dropout > 0:
        steps.append(
            A.CoarseDropout(
                num_holes_range=(1, MAX_HOLES), hole_height_range=HOLE_SIZE, hole_width_range=HOLE_SIZE, p=aug.dropout
            )
        )
    steps += [A.Normalize(MEAN, STD), ToCHW()]
    return Albumentations(A.Compose(steps, seed=seed))
