"""DVC stage `ensemble`: the embeddings the submission searches with -> data/final/{gallery,test}.npz.

* Default (``ensemble.folds: []``, ``full_fit: false``): the ``fold`` model's embeddings, gallery = every
  training image (training folds + validation fold), unchanged.
* ``ensemble.folds: [1, 2]``: also trains the models of those folds (models/ensemble/fold1.pt, ...) and
  concatenates every member's L2-normalised embeddings, scaled so rows stay unit length: the cosine of two
  ensemble embeddings is the mean of the members' cosines.
* ``ensemble.full_fit: true``: trains a model on all training images (models/ensemble/full.pt); it replaces the
  ``fold`` model in the submission.

CV (metrics/cv.json and its threshold) always comes from the ``fold`` model on its validation fold; the
submission applies that threshold to the ensemble's similarities. Each extra model resumes from its own
checkpoint after an interruption.
"""

import logging

import numpy as np

from stages.common import check_resized, folds_with_labels, resized_paths
from stages.train import train_one
from whaleid.cli import run_stage
from whaleid.config import Params
from whaleid.data import load_dataset
from whaleid.embed import extract_embeddings
from whaleid.io import atomic_dir, load_npz, save_npz, write_json
from whaleid.model import load_model
from whaleid.paths import EMBED_DIR, ENSEMBLE_DIR, FINAL_DIR, MODEL
from whaleid.train import select_device

log = logging.getLogger("whaleid.ensemble")


def combine(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate unit-length embeddings of several models; rows stay unit length (divided by sqrt(models))."""
    return (np.concatenate(parts, axis=1) / np.sqrt(len(parts))).astype(np.float32)


def main(params: Params) -> None:
    cfg = params.ensemble
    ds = load_dataset(params.data.dir)
    check_resized(params)
    folds, _ = folds_with_labels()
    extra = [f for f in cfg.folds if f != params.fold]
    with atomic_dir(ENSEMBLE_DIR) as tmp:
        members = []
        if cfg.full_fit:
            train_one(params, None, tmp / "full.pt", None)
            members.append(tmp / "full.pt")
        for f in extra:
            train_one(params, f, tmp / f"fold{f}.pt", None, evaluate_each_epoch=False)
            members.append(tmp / f"fold{f}.pt")
        names = (["full.pt"] if cfg.full_fit else [str(MODEL)]) + [f"fold{f}.pt" for f in extra]
        write_json(tmp / "members.json", {"members": names})
        if not cfg.full_fit and not extra:
            train, valid, test = (load_npz(EMBED_DIR / f"{n}.npz") for n in ("train", "valid", "test"))
            gallery = {k: np.concatenate([train[k], valid[k]]) for k in ("embeddings", "images", "labels")}
            queries = test
        else:
            models = ([] if cfg.full_fit else [MODEL]) + members
            device = select_device(params.runtime.device)
            kw = dict(img_size=params.model.img_size, batch_size=params.embed.batch_size, device=device,
                      num_workers=params.runtime.num_workers, flip_tta=params.embed.flip_tta)  # fmt: skip
            gallery_paths = resized_paths("train_images", folds["image"], params.resize.format)
            test_paths = resized_paths("test_images", ds.test_images, params.resize.format)
            g_parts, q_parts = [], []
            for path in models:
                model, _ = load_model(path, device)
                g_parts.append(extract_embeddings(model, gallery_paths, desc=f"gallery {path.name}", **kw))
                q_parts.append(extract_embeddings(model, test_paths, desc=f"test {path.name}", **kw))
            gallery = {"embeddings": combine(g_parts), "images": np.asarray(folds["image"], dtype=str),
                       "labels": folds["label"].to_numpy()}  # fmt: skip
            queries = {"embeddings": combine(q_parts), "images": np.asarray(ds.test_images, dtype=str),
                       "labels": np.full(len(ds.test_images), -1, dtype=np.int64)}  # fmt: skip
    save_npz(FINAL_DIR / "gallery.npz", **gallery)
    save_npz(FINAL_DIR / "test.npz", **queries)
    log.info("submission embeddings from %s: gallery %d x %d, test %d", " + ".join(names), *gallery["embeddings"].shape,
             len(queries["embeddings"]))  # fmt: skip


if __name__ == "__main__":
    run_stage("ensemble", main)
