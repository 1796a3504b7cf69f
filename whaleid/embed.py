"""Embedding extraction: images -> L2-normalised float32 (N, d) with a model's ``embed``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from whaleid.augment import model_input
from whaleid.data import ImageDataset
from whaleid.transforms import AsUint8


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for ``device``: bf16 where supported, else fp16, none on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_workers(num_workers: int, device: torch.device, training: bool = False) -> int:
    """``num_workers`` as given, or for -1 (auto): on a CPU with 2 cores or fewer, 0 -- worker processes would
    fight the model's own threads for the cores (``python -m bench.train_loop``: efficiency 0.73 with 2 workers,
    0.87 with none); otherwise one per core (inference) or one per core but one (training), at most 8."""
    if num_workers >= 0:
        return num_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cpu" and cores <= 2:
        return 0
    return max(0, min(8, cores - 1 if training else cores))


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int, device: torch.device,
                persistent: bool = False, training: bool = False, **kwargs: object) -> torch.utils.data.DataLoader:  # fmt: skip
    """DataLoader with pinned memory on CUDA; ``persistent`` keeps worker processes alive across epochs;
    ``num_workers`` -1 picks a number for this machine (:func:`resolve_workers`)."""
    num_workers = resolve_workers(num_workers, device, training)
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
    """Embed every image in ``paths`` (resized to ``img_size`` if needed, normalised on the device, no
    augmentation); rows are L2-normalised.

    With ``flip_tta`` a row is the normalised sum of the normalised embeddings of the image and its mirror image.
    """
    was_training = model.training
    model.eval()
    loader = make_loader(ImageDataset(paths, AsUint8(img_size)), batch_size, num_workers, device)
    dtype = autocast_dtype(device)
    out = []
    for images, _ in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        images = model_input(images, device)
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
