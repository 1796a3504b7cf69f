"""DVC stage `knn`: Faiss top-k (``knn.*``).

* data/neighbors/valid/<name>.npz for every fold model (the `fold` model and any foldN member): its validation
  fold's images against its training folds, for (out-of-fold) CV;
* data/neighbors/test.npz: test images against the submission gallery (data/final, every training image).

Each file holds ``sims`` (Q, k), ``neighbors`` (Q, k), ``query_images``, ``query_labels``, ``gallery_labels``,
``gallery_images``. With ``blend.knn_weight < 1`` the similarities are blended with the models' ArcFace class
cosines (:mod:`whaleid.retrieval.blend`; validation: that fold model's own head; test: the mean over the submission models)
and each row gains ``blend.extra_classes`` candidates (k + extra columns).
"""

import logging

import numpy as np

from whaleid.config import Params
from whaleid.core.atomic import atomic_dir, load_npz, save_npz
from whaleid.pipeline.artifacts import cv_models, submission_models, validation_split
from whaleid.pipeline.paths import FINAL_DIR, NEIGHBOR_DIR, embed_dir
from whaleid.pipeline.stage import run_stage
from whaleid.retrieval.blend import Centres, search_blended

log = logging.getLogger("whaleid.knn")


def _centres(name: str) -> Centres:
    return Centres.from_arrays(load_npz(embed_dir(name) / "centres.npz"))


def _search(out, query: dict, gallery: dict, params: Params, parts: list[tuple[np.ndarray, Centres]]) -> None:
    nn = search_blended(query, gallery, params.knn, params.blend, parts)
    save_npz(out, **nn)
    sims, cfg = nn["sims"], params.blend
    log.info(
        "%s: %d queries x top-%d over %d gallery images (%s index%s)",
        out.name,
        len(sims),
        sims.shape[1],
        len(gallery["labels"]),
        params.knn.index,
        f", blended with class cosines, knn_weight {cfg.knn_weight}" if cfg.knn_weight < 1.0 else "",
    )


def main(params: Params) -> None:
    blend = params.blend.knn_weight < 1.0
    with atomic_dir(NEIGHBOR_DIR / "valid") as tmp:
        for name, fold in cv_models(params).items():
            query, gallery = validation_split(load_npz(embed_dir(name) / "train.npz"), fold)
            parts = [(query["embeddings"], _centres(name))] if blend else []
            _search(tmp / f"{name}.npz", query, gallery, params, parts)
    names = submission_models(params)
    parts = [(load_npz(embed_dir(n) / "test.npz")["embeddings"], _centres(n)) for n in names] if blend else []
    _search(
        NEIGHBOR_DIR / "test.npz", load_npz(FINAL_DIR / "test.npz"), load_npz(FINAL_DIR / "gallery.npz"), params, parts
    )


if __name__ == "__main__":
    run_stage("knn", main)
