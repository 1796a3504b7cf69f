"""Validation MAP@5 of embeddings: kNN search, then the prediction rule fitted on the queries (per-epoch
validation during training uses it with the default rule, so tuning ``threshold``/``knn`` never retrains)."""

from __future__ import annotations

import numpy as np

from whaleid.config import KnnConfig, ThresholdConfig
from whaleid.core.errors import ConfigError
from whaleid.retrieval.neighbours import Neighbours
from whaleid.retrieval.search import search
from whaleid.rule.predict import fit_rule

# Per-epoch validation: exact search and the default rule (max scoring, the default threshold grid).
EVAL_KNN = KnnConfig()
EVAL_RULE = ThresholdConfig()


def cv_score(
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    gallery_emb: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    new_ratio: float,
    knn: KnnConfig = EVAL_KNN,
    rule: ThresholdConfig = EVAL_RULE,
) -> dict[str, float]:
    """Best weighted MAP@5 of the queries against the gallery under ``rule``, and its threshold."""
    sims, rows = search(gallery_emb, query_emb, knn)
    nn = Neighbours(sims, rows, np.asarray(gallery_labels), np.asarray(query_labels))
    fit = fit_rule([nn], rule, new_ratio, warn=False)
    on_grid = fit.table["threshold"] == fit.rule.threshold
    map5 = float(fit.table.loc[on_grid, "map5"].iloc[0]) if on_grid.any() else fit.metrics["map5"]
    return {"map5": map5, "threshold": fit.rule.threshold}


def eval_subset(
    gallery_labels: np.ndarray, query_labels: np.ndarray, max_images: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the gallery and of the queries for a per-epoch validation on at most ``max_images`` images in all
    (0: every row). Individuals are taken whole, in a seeded random order, each one that still fits in the budget:
    a kept individual brings all its gallery and query photos, and individuals seen only among the queries (new
    ones) are drawn like the others, so the subset keeps the share of new individuals on average. The same rows
    every epoch."""
    gallery_labels, query_labels = np.asarray(gallery_labels), np.asarray(query_labels)
    if max_images <= 0 or len(gallery_labels) + len(query_labels) <= max_images:
        return np.arange(len(gallery_labels)), np.arange(len(query_labels))
    ids, counts = np.unique(np.concatenate([gallery_labels, query_labels]), return_counts=True)
    keep, left = [], max_images
    for i in np.random.default_rng(seed).permutation(len(ids)):
        if counts[i] <= left:
            keep.append(ids[i])
            left -= counts[i]
    if not keep:
        raise ConfigError(
            f"train.eval_images {max_images} is fewer than the photos of any one individual (at least "
            f"{counts.min()}); raise it, or set 0 to validate on every image."
        )
    return np.flatnonzero(np.isin(gallery_labels, keep)), np.flatnonzero(np.isin(query_labels, keep))
