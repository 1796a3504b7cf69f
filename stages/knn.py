"""DVC stage `knn`: Faiss top-k. valid -> train folds (for CV) and test -> the submission gallery (data/final:
train + valid, embedded by the fold model or the ensemble).

Writes data/neighbors/{valid,test}.npz: ``sims`` (Q, k), ``neighbors`` (Q, k), ``query_images``,
``query_labels`` and ``gallery_labels``.
"""

import logging

from whaleid.cli import run_stage
from whaleid.config import Params
from whaleid.io import load_npz, save_npz
from whaleid.paths import EMBED_DIR, FINAL_DIR, NEIGHBOR_DIR
from whaleid.retrieval import search

log = logging.getLogger("whaleid.knn")


def main(params: Params) -> None:
    train, valid = (load_npz(EMBED_DIR / f"{n}.npz") for n in ("train", "valid"))
    test, full = (load_npz(FINAL_DIR / f"{n}.npz") for n in ("test", "gallery"))
    for name, query, gallery in (("valid", valid, train), ("test", test, full)):
        sims, neighbors = search(gallery["embeddings"], query["embeddings"], params.knn)
        save_npz(NEIGHBOR_DIR / f"{name}.npz", sims=sims, neighbors=neighbors, query_images=query["images"],
                 query_labels=query["labels"], gallery_labels=gallery["labels"])  # fmt: skip
        log.info("%s: %d queries x top-%d over %d gallery images (%s index)", name, len(sims), sims.shape[1],
                 len(gallery["labels"]), params.knn.index)  # fmt: skip


if __name__ == "__main__":
    run_stage("knn", main)
