"""Does k-reciprocal re-ranking help? CV MAP@5 of a trained fold model's validation queries, kNN alone against
kNN re-ranked as ``knn.rerank: k_reciprocal`` does it (no blend, no local features), the rule fitted on each, from the embeddings a `dvc repro` left in data/embeddings.
Run in a repository after `dvc repro` (the workspace's params give the fold, knn.k and the threshold grid):

    python experiments/rerank_cv.py [--k1 20 --k2 6 --lam 0.3]
"""

from __future__ import annotations

import argparse

from whaleid.config import load_params, replace
from whaleid.core.atomic import load_npz
from whaleid.pipeline.paths import embed_dir
from whaleid.pipeline.scoring import validation_photos
from whaleid.retrieval.neighbours import Neighbours
from whaleid.retrieval.rerank import rerank_neighbours
from whaleid.retrieval.search import search
from whaleid.rule.predict import fit_rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--lam", type=float, default=0.3)
    args = parser.parse_args()
    params = load_params("params.yaml")
    query, gallery = validation_photos(load_npz(embed_dir(f"fold{params.fold}") / "train.npz"), params.fold)
    sims, rows = search(gallery.embeddings, query.embeddings, params.knn)
    cfg = replace(params.knn, rerank="k_reciprocal", rerank_k1=args.k1, rerank_k2=args.k2, rerank_lambda=args.lam)
    reranked = rerank_neighbours(query.embeddings, gallery.embeddings, sims, rows, cfg)
    for name, (s, r) in (("kNN", (sims, rows)), ("kNN + k-reciprocal", reranked)):
        fit = fit_rule(
            [Neighbours(s, r, gallery.labels, query.labels)], params.threshold, params.cv.new_ratio, warn=False
        )
        m = fit.metrics
        print(
            f"{name}: CV MAP@5 {m['map5']:.4f} (known {m['map5_known']:.4f}, new {m['map5_new']}) at threshold "
            f"{m['threshold']:.3f}"
        )


if __name__ == "__main__":
    main()
