"""DVC stage `knn`: the scoring chain's search, re-rank and blend (``knn.*``, ``blend.*``; see
:mod:`whaleid.retrieval.chain`) -> data/neighbours/:

* valid/<name>.npz for every fold model (the `fold` model and any foldN member): its validation fold's photos
  against the photos it trained on, for (out-of-fold) CV;
* test.npz: the test photos against the submission gallery (data/final: every training photo).

Each holds a :class:`whaleid.retrieval.neighbours.Neighbours`. With ``blend.knn_weight < 1`` the similarities are
blended with the models' ArcFace class cosines (validation: that fold model's own head; test: the mean over the
submission models) and each row gains ``blend.extra_classes`` candidates.
"""

import logging

from whaleid.config import Params
from whaleid.pipeline.paths import NEIGHBOUR_DIR
from whaleid.pipeline.scoring import save_results, search_all
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.knn")


def main(params: Params) -> None:
    valid, test = search_all(params)
    save_results(NEIGHBOUR_DIR, valid, test)
    for name, nn in {**valid, "test": test}.items():
        log.info(
            "%s: %d queries x top-%d over %d gallery photos (%s index%s)",
            name,
            len(nn),
            nn.sims.shape[1],
            len(nn.gallery_labels),
            params.knn.index,
            f", blended, knn_weight {params.blend.knn_weight}" if params.blend.knn_weight < 1 else "",
        )


if __name__ == "__main__":
    run_stage("knn", main)
