"""Albumentations pipelines built from the ``augment`` and ``model`` params blocks.

Train: resize to ``img_size`` -> [horizontal flip] -> [affine: rotate, scale, translate] -> [brightness/contrast]
-> [gaussian blur] -> [coarse dropout] -> normalise (ImageNet mean/std) -> CHW tensor. Eval: resize -> normalise.
A probability of 0 leaves a transform out.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from whaleid.config import AugmentConfig

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ToCHW(A.ImageOnlyTransform):
    """HWC float image to a contiguous CHW float32 tensor (avoids the torchvision-dependent ToTensorV2)."""

    def __init__(self) -> None:
        super().__init__(p=1.0)

    def apply(self, img: np.ndarray, **params: object) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


def eval_transform(img_size: int) -> A.Compose:
    return A.Compose([A.Resize(img_size, img_size, interpolation=cv2.INTER_AREA), A.Normalize(MEAN, STD), ToCHW()])


def train_transform(img_size: int, aug: AugmentConfig, seed: int = 0) -> A.Compose:
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
        steps.append(A.GaussianBlur(blur_limit=(3, 5), p=aug.blur))
    if aug.dropout > 0:
        steps.append(
            A.CoarseDropout(
                num_holes_range=(1, 4), hole_height_range=(0.05, 0.2), hole_width_range=(0.05, 0.2), p=aug.dropout
            )
        )
    steps += [A.Normalize(MEAN, STD), ToCHW()]
    return A.Compose(steps, seed=seed)
