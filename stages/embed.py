"""DVC stage `embed`: L2-normalised float32 embeddings for the training folds, the validation fold and test.

Writes data/embeddings/{train,valid,test}.npz with arrays ``embeddings`` (N, d), ``images`` and ``labels``
(class numbers; -1 for test).
"""

import logging

import numpy as np

from stages.common import check_resized, folds_with_labels, resized_paths
from whaleid.cli import run_stage
from whaleid.config import Params
from whaleid.data import load_dataset
from whaleid.embed import extract_embeddings
from whaleid.io import save_npz
from whaleid.model import load_model
from whaleid.paths import EMBED_DIR, MODEL
from whaleid.train import select_device

log = logging.getLogger("whaleid.embed")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    check_resized(params)
    folds, _ = folds_with_labels()
    device = select_device(params.runtime.device)
    model, payload = load_model(MODEL, device)
    if payload.get("fold") != params.fold:
        log.warning("%s was trained for fold %s but fold is %d", MODEL, payload.get("fold"), params.fold)
    img_size = int(payload["model"]["img_size"])
    kw = dict(
        img_size=img_size,
        batch_size=params.embed.batch_size,
        device=device,
        num_workers=params.runtime.num_workers,
        flip_tta=params.embed.flip_tta,
    )
    parts = {
        "train": folds[folds["fold"] != params.fold],
        "valid": folds[folds["fold"] == params.fold],
    }
    for name, rows in parts.items():
        emb = extract_embeddings(
            model, resized_paths("train_images", rows["image"], params.resize.format), desc=f"embed {name}", **kw
        )
        save_npz(EMBED_DIR / f"{name}.npz", embeddings=emb, images=np.asarray(rows["image"], dtype=str),
                 labels=rows["label"].to_numpy())  # fmt: skip
        log.info("%s: %d embeddings of dimension %d", name, *emb.shape)
    emb = extract_embeddings(
        model, resized_paths("test_images", ds.test_images, params.resize.format), desc="embed test", **kw
    )
    save_npz(EMBED_DIR / "test.npz", embeddings=emb, images=np.asarray(ds.test_images, dtype=str),
             labels=np.full(len(ds.test_images), -1, dtype=np.int64))  # fmt: skip
    log.info("test: %d embeddings", len(emb))


if __name__ == "__main__":
    run_stage("embed", main)
