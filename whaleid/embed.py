"""Embedding extraction: images -> L2-normalised float32 (N, d) with a model's ``embed``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from whaleid.data import ImageDataset
from whaleid.transforms import eval_transform


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for ``device``: bf16 where supported, else fp16, none on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int, device: torch.device,
                persistent: bool = False, **kwargs: object) -> torch.utils.data.DataLoader:  # fmt: skip
    """DataLoader with pinned memory on CUDA; ``persistent`` keeps worker processes alive across epochs."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0 and persistent,
        **kwargs,
    )


@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    paths: Sequence[str | Path],
    img_size: int,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    desc: str = "embed",
    progress: bool = True,
    flip_tta: bool = False,
) -> np.ndarray:
    """Embed every image in ``paths`` (eval transform, no augmentation); rows are L2-normalised.

    With ``flip_tta`` a row is the normalised sum of the normalised embeddings of the image and its mirror image.
    """
    was_training = model.training
    model.eval()
    loader = make_loader(ImageDataset(paths, eval_transform(img_size)), batch_size, num_workers, device)
    dtype = autocast_dtype(device)
    out = []
    for images, _ in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            emb = torch.nn.functional.normalize(model.embed(images).float(), dim=1)
            if flip_tta:
                flipped = torch.nn.functional.normalize(model.embed(images.flip(-1)).float(), dim=1)
                emb = torch.nn.functional.normalize(emb + flipped, dim=1)
        out.append(emb.cpu())
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32)
