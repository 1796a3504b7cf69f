"""A frozen pretrained backbone as a global descriptor (``local.descriptor``): one more score for the calibrated
fusion, from a network that learned to see before it met these individuals.

A model trained from scratch on about five photos an individual learns little about an individual from photos of
whole animals in their scene; an ImageNet backbone, untouched, already tells coats, shapes and poses apart. Each
photo is cropped to its box as local features see it (``crop.*``), resized to a ``local.descriptor_size`` square,
normalised with the backbone's own mean and std, and its last feature map averaged over space and L2-normalised:
a pair's ``descriptor`` score is the cosine of the two photos' descriptors. The weights come from
``local.descriptor_weights`` (a local file, as ``model.weights``) or, without one, from timm's pretrained weights
through the Hugging Face hub cache (as ``model.pretrained``). Descriptors are stored as float16 in the keypoint
files' layout, one "keypoint" per photo, so that the gallery keeps and grows them as it does local features.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from whaleid.config import LocalConfig
from whaleid.core.log import bar_options
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import Box, crop_to_box
from whaleid.data.images import read_image
from whaleid.model.network import create_backbone, load_backbone_weights

METHOD = "descriptor"  # its name among the local-feature methods (keypoint files, scores, the gallery)
BATCH = 32


@functools.lru_cache(maxsize=2)
def frozen_backbone(name: str, weights: str | None, device: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The backbone in eval mode on ``device`` with its input mean and std ((1, 3, 1, 1) each), built once."""
    net = create_backbone(name, pretrained=weights is None, key="local.descriptor")
    if weights is not None:
        load_backbone_weights(net, weights, "local.descriptor_weights")
    cfg = net.pretrained_cfg
    mean, std = (torch.tensor(cfg.get(k, d), dtype=torch.float32).view(1, 3, 1, 1) for k, d in
                 (("mean", (0.485, 0.456, 0.406)), ("std", (0.229, 0.224, 0.225))))  # fmt: skip
    net = net.eval().to(device, memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    return net, mean.to(device), std.to(device)


def descriptor_photo(path: str | Path, box: Box | None, margin: float, size: int, max_megapixels: float) -> np.ndarray:
    """RGB uint8 (size, size, 3): the photo cropped to ``box`` (grown by ``margin``) and resized to a square."""
    image = crop_to_box(read_image(path, max_megapixels), box, margin)
    shrink = max(image.shape[:2]) > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


@torch.inference_mode()
def encode(images: np.ndarray, cfg: LocalConfig, device: torch.device) -> np.ndarray:
    """(B, d) float32 unit rows: the descriptors of uint8 (B, S, S, 3) photos."""
    net, mean, std = frozen_backbone(str(cfg.descriptor), cfg.descriptor_weights, str(device))
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
    features = net(x).float().mean(dim=(-2, -1))
    return torch.nn.functional.normalize(features, dim=1).cpu().numpy()


def describe_all(
    paths: Sequence[Path],
    boxes: dict[str, Box] | None,
    margin: float,
    cfg: LocalConfig,
    *,
    desc: str = METHOD,
    run: Runtime = Runtime(),
) -> dict[str, np.ndarray]:
    """Every photo's descriptor, as the arrays of a keypoint set with one point per photo (its centre) and the
    descriptor as that point's float16 descriptor."""
    device = run.torch_device()
    frozen_backbone(str(cfg.descriptor), cfg.descriptor_weights, str(device))  # a bad name or file: before any photo
    size = cfg.descriptor_size
    names = [Path(p).name for p in paths]
    rows = []
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not run.progress, **bar_options())
    for start in range(0, len(paths), BATCH):
        chunk = paths[start : start + BATCH]
        photos = [descriptor_photo(p, (boxes or {}).get(Path(p).name), margin, size, run.max_megapixels) for p in chunk]
        rows.append(encode(np.stack(photos), cfg, device).astype(np.float16))
        bar.update(len(chunk))
    bar.close()
    n = len(paths)
    dim = rows[0].shape[1] if rows else 0
    return {
        "images": np.asarray(names, dtype=str),
        "points": np.full((n, 2), size / 2, np.float32),
        "descriptors": np.concatenate(rows) if rows else np.zeros((0, dim), np.float16),
        "offsets": np.arange(n + 1, dtype=np.int64),
        "sizes": np.full((n, 2), size, np.int64),
    }
