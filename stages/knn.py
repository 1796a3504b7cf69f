"""DVC stage `knn`: Faiss top-k (``knn.*``).

* data/neighbors/valid/<name>.npz for every fold model (the `fold` model and any foldN member): its validation
  fold's images against its training folds, for (out-of-fold) CV;
* data/neighbors/test.npz: test images against the submission gallery (data/final, every training image).

Each file holds ``sims`` (Q, k), ``neighbors`` (Q, k), ``query_images``, ``query_labels``, ``gallery_labels``,
``gallery_images``.
"""

import logging

from whaleid.artifacts import cv_models, validation_split
from whaleid.config import Params
from whaleid.io import atomic_dir, load_npz, save_npz
from whaleid.paths import FINAL_DIR, NEIGHBOR_DIR, embed_dir
from whaleid.retrieval import search
from whaleid.stage import run_stage

log = logging.getLogger("whaleid.knn")


def _search(out, query: dict, gallery: dict, params: Params) -> None:
    sims, neighbors = search(gallery["embeddings"], query["embeddings"], params.knn)
    save_npz(out, sims=sims, neighbors=neighbors, query_images=query["images"], query_labels=query["labels"],
             gallery_labels=gallery["labels"], gallery_images=gallery["images"])  # fmt: skip
    log.info("%s: %d queries x top-%d over %d gallery images (%s index)", out.name, len(sims), sims.shape[1],
             len(gallery["labels"]), params.knn.index)  # fmt: skip


def main(params: Params) -> None:
    with atomic_dir(NEIGHBOR_DIR / "valid") as tmp:
        for name, fold in cv_models(params).items():
            _search(tmp / f"{name}.npz", *validation_split(load_npz(embed_dir(name) / "train.npz"), fold), params)
    _search(NEIGHBOR_DIR / "test.npz", load_npz(FINAL_DIR / "test.npz"), load_npz(FINAL_DIR / "gallery.npz"), params)


if __name__ == "__main__":
    run_stage("knn", main)
