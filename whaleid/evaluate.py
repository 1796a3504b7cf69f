"""Cross-validation scoring shared by per-epoch validation, the threshold stage and the baselines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from whaleid.config import KnnConfig
from whaleid.retrieval import search
from whaleid.threshold import NEW, best_threshold, candidates, sweep


def query_truth(query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """Query labels, with :data:`NEW` for individuals absent from the gallery."""
    query_labels = np.asarray(query_labels)
    return np.where(np.isin(query_labels, gallery_labels), query_labels, NEW)


def cv_sweep(
    sims: np.ndarray,
    neighbors: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    thresholds: Sequence[float],
    new_ratio: float,
    scoring: str = "max",
    power: float = 4.0,
) -> tuple[pd.DataFrame, float]:
    """Threshold table and best threshold for queries with known labels against a labelled gallery."""
    labels, scores = candidates(sims, neighbors, gallery_labels, scoring, power)
    table = sweep(labels, scores, query_truth(query_labels, gallery_labels), thresholds, new_ratio)
    return table, best_threshold(table)


def cv_score(
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    gallery_emb: np.ndarray,
    gallery_labels: np.ndarray,
    knn: KnnConfig,
    thresholds: Sequence[float],
    new_ratio: float,
) -> dict[str, float]:
    """Best weighted MAP@5 over ``thresholds`` and its threshold (used for per-epoch validation)."""
    sims, neighbors = search(gallery_emb, query_emb, knn)
    table, thr = cv_sweep(sims, neighbors, query_labels, gallery_labels, thresholds, new_ratio)
    row = table[table["threshold"] == thr].iloc[0]
    return {"map5": float(row["map5"]), "threshold": thr}
