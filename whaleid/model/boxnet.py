"""Box detector: crops that never depend on ground truth at test time (stage ``detect``).

Real photo-ID data comes with boxes for the training photos at best (annotated by hand or by a public detector);
a new photo has none. The detector learns the train photos' boxes and draws one for every photo without:

* **Model.** A timm CNN's feature map (stride 32) feeds a 1x1 convolution with five outputs per cell: a vote
  logit, the box centre's offset inside the cell and the box's width and height. The box is the vote-weighted mean
  (a soft-argmax over cells), so it is differentiable, and unlike a global-pooled regressor the network keeps
  *where* it saw the animal. One box per photo, as the competition's crops are.
* **Loss.** L1 on the corners plus the generalised IoU loss, both in coordinates normalised to the photo.
* **Augmentation.** Mirroring, zoom (0.8-1.25; black beyond the photo, as a mirrored border would copy the
  animal) and shift (up to 15%) with the box moved alike, brightness and contrast; batched, in torch.
* **Held-back photos.** ``detect.holdout`` of the boxed train photos never train it; their IoU (mean, share over
  0.5 and 0.75) is reported next to the IoU of the mean train box, which knows nothing of the photo.

Photos are decoded once and resized to ``detect.img_size`` squares (aspect ratio dropped: boxes are normalised
per axis, so a box maps back exactly). Decoded chunks are cached under ``.whaleid_cache/detect`` so that an
interrupted stage does not decode the same photos again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou_loss
from tqdm.auto import tqdm

from whaleid.config import DetectConfig
from whaleid.core.errors import ConfigError, DataError, short_reason
from whaleid.core.log import bar_options
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import pixel_boxes
from whaleid.data.photos import load_photos
from whaleid.data.resize import Box
from whaleid.model.augment import MEAN, STD
from whaleid.model.network import create_backbone
from whaleid.model.schedule import clip_gradients, lr_lambda
from whaleid.model.weights import safe_torch_load

log = logging.getLogger(__name__)

_MEAN = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
_STD = torch.tensor(STD).view(1, 3, 1, 1) * 255
_CHUNK = 64


class BoxNet(nn.Module):
    """timm feature map -> one box per photo by soft-argmax voting over the map's cells (normalised x1, y1, x2,
    y2)."""

    def __init__(self, backbone: str, pretrained: bool = False) -> None:
        super().__init__()
        # Unknown names get close suggestions; pretrained weights missing offline get the hub hint.
        self.backbone = create_backbone(backbone, pretrained, key="detect.backbone")
        channels = self.backbone.num_features
        self.head = nn.Conv2d(channels, 5, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone.forward_features((x - _MEAN.to(x.device)) / _STD.to(x.device))
        if f.ndim != 4:
            raise ConfigError(f"detect.backbone must give a 2-D feature map (a CNN), got shape {tuple(f.shape)}")
        out = self.head(f)  # B, 5, h, w
        b, _, h, w = out.shape
        vote = torch.softmax(out[:, 0].flatten(1), dim=1).view(b, h, w)
        gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
        cx = ((gx + torch.sigmoid(out[:, 1])) / w * vote).sum((1, 2))
        cy = ((gy + torch.sigmoid(out[:, 2])) / h * vote).sum((1, 2))
        bw = (torch.sigmoid(out[:, 3] - 1.0) * vote).sum((1, 2))  # starts near a quarter of the photo
        bh = (torch.sigmoid(out[:, 4] - 1.0) * vote).sum((1, 2))
        return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)


def _augment(x: torch.Tensor, boxes: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror, zoom and shift each photo with its box; jitter brightness and contrast (``x`` float 0-255)."""
    n = x.shape[0]
    u = torch.rand(n, 6, generator=g)
    flip = u[:, 0] < 0.5
    boxes = boxes.clone()
    boxes[flip] = torch.stack([1 - boxes[flip, 2], boxes[flip, 1], 1 - boxes[flip, 0], boxes[flip, 3]], dim=1)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    s = torch.exp((u[:, 1] - 0.5) * 2 * math.log(1.25))
    tx, ty = (u[:, 2] - 0.5) * 0.3, (u[:, 3] - 0.5) * 0.3
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, 0, 2], theta[:, 1, 2] = -2 * tx / s, -2 * ty / s
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)  # reflection would copy the animal
    shift = torch.stack([tx, ty, tx, ty], dim=1)
    boxes = ((boxes - 0.5) * s.view(-1, 1) + 0.5 + shift).clamp(0, 1)
    gain, contrast = 0.75 + 0.5 * u[:, 4], 0.75 + 0.5 * u[:, 5]
    mean = x.mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast.view(-1, 1, 1, 1) + mean) * gain.view(-1, 1, 1, 1)
    return x.clamp(0, 255), boxes


def _batches(images: np.ndarray, order: np.ndarray, batch: int) -> list[tuple[np.ndarray, torch.Tensor]]:
    return [
        (order[i : i + batch], torch.from_numpy(images[order[i : i + batch]]).permute(0, 3, 1, 2).float())
        for i in range(0, len(order), batch)
    ]


def new_detector(cfg: DetectConfig) -> BoxNet:
    """A seeded, untrained :class:`BoxNet` (unknown backbone names stop here, before any photo is decoded)."""
    torch.manual_seed(cfg.seed)
    return BoxNet(cfg.backbone, cfg.pretrained)


def train_detector(
    images: np.ndarray,
    boxes: np.ndarray,
    cfg: DetectConfig,
    *,
    device: torch.device,
    progress: bool = True,
    model: BoxNet | None = None,
) -> tuple[BoxNet, list[float]]:
    """Train ``model`` (default :func:`new_detector`) on ``images`` (N, s, s, 3 uint8) and their normalised
    ``boxes``; return it (in eval mode) and the mean loss of each epoch."""
    model = (model or new_detector(cfg)).to(device, memory_format=torch.channels_last)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * math.ceil(len(images) / cfg.batch_size)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_lambda(i, steps, warmup, 0.02))
    g = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    target = torch.from_numpy(np.asarray(boxes, np.float32))
    losses = []
    model.train()
    for epoch in tqdm(range(cfg.epochs), desc="detect: train", unit="epoch", disable=not progress, **bar_options()):
        total = 0.0
        for idx, x in _batches(images, rng.permutation(len(images)), cfg.batch_size):
            x, y = _augment(x, target[idx], g)
            pred = model(x.to(device, memory_format=torch.channels_last))
            y = y.to(device)
            loss = F.l1_loss(pred, y) * 4 + generalized_box_iou_loss(pred, y, reduction="mean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(params, 5.0)
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(images))
        log.debug("detect epoch %d: loss %.4f", epoch + 1, losses[-1])
    model.eval()
    return model, losses


@torch.no_grad()
def predict(model: BoxNet, images: np.ndarray, device: torch.device, batch: int = 128) -> np.ndarray:
    """Normalised boxes ``(N, 4)`` for ``images`` (N, s, s, 3 uint8); each at least one pixel of its square."""
    model.eval().to(memory_format=torch.channels_last)
    order = np.arange(len(images))
    out = [
        model(x.to(device, memory_format=torch.channels_last)).float().cpu().numpy()
        for _, x in _batches(images, order, batch)
    ]
    pred = np.concatenate(out) if out else np.zeros((0, 4), np.float32)
    pred = np.clip(pred, 0.0, 1.0)
    eps = 1.0 / max(1, images.shape[1] if len(images) else 1)
    pred[:, 2] = np.maximum(pred[:, 2], np.minimum(pred[:, 0] + eps, 1.0))
    pred[:, 3] = np.maximum(pred[:, 3], np.minimum(pred[:, 1] + eps, 1.0))
    pred[:, 0] = np.minimum(pred[:, 0], pred[:, 2] - eps)
    pred[:, 1] = np.minimum(pred[:, 1], pred[:, 3] - eps)
    return pred.astype(np.float64)


def holdout_split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, held back)`` of ``n`` boxed photos: ``share`` of them, at least one when ``share`` > 0 and
    ``n`` >= 10, held back (seeded)."""
    k = int(round(n * share))
    if share > 0 and n >= 10:
        k = max(k, 1)
    order = np.random.default_rng([seed, 11]).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def save_detector(path: Path, model: BoxNet, cfg: DetectConfig) -> None:
    """State dict plus what rebuilds the model (a plain dict of tensors and strings: loads with weights_only)."""
    from whaleid.core.atomic import save_torch

    save_torch(path, {"state_dict": model.state_dict(), "backbone": cfg.backbone, "img_size": cfg.img_size})


def load_detector(path: Path, device: torch.device) -> tuple[BoxNet, int]:
    """The model saved by :func:`save_detector`, and its input size."""
    blob = safe_torch_load(path, f"{path} (the box detector)")
    try:
        model = BoxNet(blob["backbone"])
        model.load_state_dict(blob["state_dict"])
        size = int(blob["img_size"])
    except Exception as exc:  # noqa: BLE001 - not a dict, a key missing, tensors of other shapes
        reason = short_reason(exc)
        raise DataError(
            f"{path}: not a box detector saved by stage detect ({type(exc).__name__}: {reason}); "
            "rerun `dvc repro detect`."
        ) from None
    return model.to(device).eval(), size


def detect_boxes(
    model: BoxNet,
    img_size: int,
    paths: Sequence[Path],
    *,
    run: Runtime = Runtime(),
) -> dict[str, Box]:
    """Boxes (pixels) for ``paths`` by a trained detector (run on ``run.device``): ``{file name: box}``."""
    photos = load_photos(paths, img_size, run=run)
    started = time.perf_counter()
    boxes = pixel_boxes(predict(model, photos.images, run.torch_device()), photos.sizes)
    log.debug("detector: %d photos in %.1f s", len(paths), time.perf_counter() - started)
    return {Path(p).name: box for p, box in zip(paths, boxes, strict=True)}
