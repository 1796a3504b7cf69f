"""The embed and ensemble stages' work: every photo embedded by one trained model, and the models' embeddings
combined into the submission's.

``embed_member`` writes data/embeddings/<name>/: ``train.npz`` holds every training image in folds.csv order
(arrays ``embeddings`` (N, d), ``images``, ``labels`` (class numbers), ``folds`` and ``held``; and ``queries``
(N, d), the same photos cropped as validation queries are, where stage ``resize`` wrote query_images/), ``test.npz`` every
test image in sample_submission order (``labels`` -1), ``centres.npz`` the model's ArcFace class centres for the
kNN + classifier blend. ``combine_members`` concatenates the submission models' unit-length embeddings scaled by
1/sqrt(members), so the cosine of two combined embeddings is the mean of the members' cosines.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from whaleid.config import Params, member_fold
from whaleid.core.atomic import atomic_dir, load_npz, save_npz
from whaleid.data.folds import training_rows
from whaleid.data.layout import load_dataset
from whaleid.pipeline.artifacts import check_resized, folds_with_labels, held_out, resized_paths, submission_models
from whaleid.pipeline.paths import FINAL_DIR, QUERY_IMAGES, RESIZED_DIR, embed_dir, model_path
from whaleid.retrieval.blend import Centres
from whaleid.retrieval.search import combine

if TYPE_CHECKING:  # torch and the models are imported where photos are embedded, not by stage `ensemble`
    import torch
    from torch import nn

    from whaleid.model.distributed import World

log = logging.getLogger(__name__)


def embed_dataset(
    model: nn.Module,
    params: Params,
    train_images: Sequence[str],
    *,
    test_images: Sequence[str],
    device: torch.device,
    name: str,
    img_size: int,
    world: World | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Embeddings of the resized copies of ``train_images`` and ``test_images`` (``embed.*`` params), and of the
    train photos as validation queries are cropped (None where they are the train copies), with a progress bar
    named after model ``name``; sharded over the ranks of ``world``."""
    from whaleid.model.embed import extract_embeddings

    kw = dict(
        img_size=img_size,
        batch_size=params.embed.batch_size,
        device=device,
        num_workers=params.runtime.num_workers,
        flip_tta=params.embed.flip_tta,
        world=world,
    )
    fmt = params.resize.format
    train = extract_embeddings(model, resized_paths("train_images", train_images, fmt), desc=f"{name} train", **kw)
    test = extract_embeddings(model, resized_paths("test_images", test_images, fmt), desc=f"{name} test", **kw)
    queries = None
    if (RESIZED_DIR / QUERY_IMAGES).is_dir():
        paths = resized_paths(QUERY_IMAGES, train_images, fmt)
        queries = extract_embeddings(model, paths, desc=f"{name} queries", **kw)
    return train, test, queries


def embed_member(params: Params, name: str) -> None:
    """Stage ``embed`` / ``member_embed@<name>``: model ``name``'s embeddings of every photo and its class centres
    -> data/embeddings/<name>/ (sharded over the processes of a torchrun group; rank 0 writes)."""
    from whaleid.model import distributed
    from whaleid.model.network import load_model

    ds = load_dataset(params.data.dir)
    check_resized(params)
    folds, _ = folds_with_labels()
    world, device = distributed.init(params.runtime.device)
    model, payload = load_model(model_path(name), device)
    img_size = int(payload["model"]["img_size"])
    train, test, queries = embed_dataset(
        model,
        params,
        folds["image"],
        test_images=ds.test_images,
        device=device,
        name=name,
        img_size=img_size,
        world=world,
    )
    if not world.main:  # under torchrun each rank embedded a share; rank 0 writes
        return
    with atomic_dir(embed_dir(name)) as tmp:
        labels, fold_of, held = folds["label"].to_numpy(), folds["fold"].to_numpy(), held_out(folds)
        images = np.asarray(folds["image"], dtype=str)
        extra = {"queries": queries} if queries is not None else {}
        save_npz(tmp / "train.npz", embeddings=train, images=images, labels=labels, folds=fold_of, held=held, **extra)
        test_labels = np.full(len(test), -1, dtype=np.int64)
        save_npz(tmp / "test.npz", embeddings=test, images=np.asarray(ds.test_images, dtype=str), labels=test_labels)
        trained_rows = training_rows(fold_of, held, member_fold(name))
        trained = np.bincount(labels[trained_rows], minlength=model.head.n_classes) > 0
        save_npz(tmp / "centres.npz", **Centres.of_model(model.head, trained).arrays())
    log.info("%s: %d train and %d test embeddings of dimension %d", name, len(train), len(test), train.shape[1])


def combine_members(params: Params, out: Path = FINAL_DIR) -> list[str]:
    """Stage ``ensemble``: the submission models' embeddings combined -> ``out``/{gallery,test}.npz; returns the
    models' names."""
    names = submission_models(params)
    with atomic_dir(out) as tmp:
        for split, name in (("train", "gallery"), ("test", "test")):
            parts = [load_npz(embed_dir(n) / f"{split}.npz") for n in names]
            embeddings = combine([p["embeddings"] for p in parts])
            save_npz(tmp / f"{name}.npz", embeddings=embeddings, images=parts[0]["images"], labels=parts[0]["labels"])
    return names
