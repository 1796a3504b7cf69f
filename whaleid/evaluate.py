"""Validation MAP@5 of embeddings: kNN search, then the prediction rule fitted on the queries (per-epoch
validation during training uses it with the default rule, so tuning ``threshold``/``knn`` never retrains)."""

from __future__ import annotations

import numpy as np

from whaleid.config import KnnConfig, ThresholdConfig
from whaleid.predict import Neighbours, fit_rule
from whaleid.retrieval import search

# Per-epoch validation: exact search and the default rule (max scoring, the default threshold grid).
EVAL_KNN = KnnConfig()
EVAL_RULE = ThresholdConfig()


def cv_score(query_emb: np.ndarray, query_labels: np.ndarray, gallery_emb: np.ndarray, gallery_labels: np.ndarray,
             new_ratio: float, knn: KnnConfig = EVAL_KNN, rule: ThresholdConfig = EVAL_RULE) -> dict[str, float]:  # fmt: skip
    """Best weighted MAP@5 of the queries against the gallery under ``rule``, and its threshold."""
    sims, neighbors = search(gallery_emb, query_emb, knn)
    nn = Neighbours(sims, neighbors, np.asarray(gallery_labels), np.asarray(query_labels))
    fit = fit_rule([nn], rule, new_ratio, warn=False)
    on_grid = fit.table["threshold"] == fit.rule.threshold
    map5 = float(fit.table.loc[on_grid, "map5"].iloc[0]) if on_grid.any() else fit.metrics["map5"]
    return {"map5": map5, "threshold": fit.rule.threshold}
