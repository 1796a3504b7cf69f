"""Embedding extraction: images -> L2-normalised float32 (N, d) with a model's ``embed``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from whaleid.core.device import autocast_dtype, make_loader
from whaleid.core.log import bar_options
from whaleid.data.images import ImageDataset
from whaleid.model.augment import model_input
from whaleid.model.distributed import World, gather_rows
from whaleid.model.fold import inference_model
from whaleid.model.transforms import AsUint8

FOLD_MIN_IMAGES = 512  # embedding fewer photos than this runs the network as it is, unless a fold is kept


@torch.inference_mode()
def extract_embeddings(
    model: nn.Module,
    paths: Sequence[str | Path],
    img_size: int,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    desc: str = "embed",
    progress: bool = True,
    flip_tta: bool = False,
    world: World | None = None,
) -> np.ndarray:
    """Embed every image in ``paths`` (resized to ``img_size`` if needed, normalised on the device, no
    augmentation); rows are L2-normalised.

    With ``flip_tta`` a row is the normalised sum of the normalised embeddings of the image and its mirror image.
    With a ``world`` of several processes (torchrun), each rank embeds a contiguous share of ``paths`` and every
    rank returns all rows, in ``paths`` order.
    """
    world = world or World()
    if world.size > 1:
        bounds = np.linspace(0, len(paths), world.size + 1).round().astype(int)
        share = list(paths)[bounds[world.rank] : bounds[world.rank + 1]]
        mine = extract_embeddings(
            model,
            share,
            img_size,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            desc=desc,
            progress=progress and world.main,
            flip_tta=flip_tta,
        )
        return gather_rows(mine)
    was_training = model.training
    model.eval().to(memory_format=torch.channels_last)  # 2-3x NCHW's images/s on a CPU for the default model
    # BatchNorm folded into the convolutions (tracing the backbone takes 30-200 ms: for a few
    # photos, such as `whaleid identify` on one, it costs more than it saves, and a fold is used only if one is
    # kept); the copy keeps the network's channels_last weights
    net = inference_model(model, build=len(paths) >= FOLD_MIN_IMAGES)
    loader = make_loader(ImageDataset(paths, AsUint8(img_size)), batch_size, num_workers=num_workers, device=device)
    dtype = autocast_dtype(device)
    # Rows go straight into one (N, d) array, allocated at the first batch: the embeddings are held once, not as a
    # list of batches, their concatenation and a float32 copy of it (3x: 0.5 GB at the competition's 79k x 512).
    out: np.ndarray | None = None
    row = 0
    for images, _ in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False, **bar_options()):
        images = model_input(images, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            emb = torch.nn.functional.normalize(net.embed(images).float(), dim=1)
            if flip_tta:
                flipped = torch.nn.functional.normalize(net.embed(images.flip(-1)).float(), dim=1)
                emb = torch.nn.functional.normalize(emb + flipped, dim=1)
        if out is None:
            out = np.empty((len(paths), emb.shape[1]), dtype=np.float32)
        out[row : row + len(emb)] = emb.cpu().numpy()
        row += len(emb)
    model.train(was_training)
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    if row != len(paths):  # the loader drops no batch here; a short count would leave rows unwritten
        raise RuntimeError(f"embedded {row} of {len(paths)} images")
    return out
