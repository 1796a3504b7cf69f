"""From nearest neighbours to five predictions, and the new_individual threshold sweep.

Rule (the reference notebook's intent, without its bugs): neighbours are taken in *descending* similarity; each
individual keeps its best similarity (first occurrence); the first five distinct individuals are the candidates.
``new_individual`` is inserted before the first candidate whose similarity is below the threshold. Rows with fewer
than five candidates are filled with the most frequent training individuals not already present, so the five
predictions are always distinct.

Labels are integers here: class numbers ``>= 0``, :data:`NEW` (-1) for new_individual. With ``p`` = number of
candidates at or above the threshold, the prediction is ``cand[:p] + [NEW] + cand[p:4]``; the sweep scores every
threshold at once from ``p`` without building a single list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

NEW = -1
N_PRED = 5


def most_frequent(labels: np.ndarray, n: int = 20) -> list:
    """The ``n`` most frequent labels, ties broken by the smaller label (deterministic): the fill for short rows."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    order = np.lexsort((values, -counts))
    return values[order][:n].tolist()


def top_candidates(
    sims: np.ndarray, neighbors: np.ndarray, gallery_labels: np.ndarray, fill: Sequence[int], n: int = N_PRED
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` distinct individuals per query, with their best similarity.

    Args:
        sims: (Q, k) similarities from the kNN search.
        neighbors: (Q, k) gallery row numbers; -1 marks "no neighbour" (as Faiss returns).
        gallery_labels: (N,) class number of every gallery row.
        fill: class numbers to fill short rows with, best first (e.g. most frequent individuals).
        n: candidates per query.

    Returns:
        labels (Q, n) int64 and scores (Q, n) float32; filled slots score ``-inf``.
    """
    sims = np.asarray(sims, dtype=np.float32)
    neighbors = np.asarray(neighbors)
    q = sims.shape[0]
    order = np.argsort(-sims, axis=1, kind="stable")
    sims = np.take_along_axis(sims, order, 1)
    neighbors = np.take_along_axis(neighbors, order, 1)
    valid = neighbors >= 0
    labels = np.where(valid, np.asarray(gallery_labels)[np.clip(neighbors, 0, None)], np.iinfo(np.int64).min)
    by_label = np.argsort(labels, axis=1, kind="stable")
    sorted_labels = np.take_along_axis(labels, by_label, 1)
    repeat_sorted = np.zeros_like(valid)
    repeat_sorted[:, 1:] = sorted_labels[:, 1:] == sorted_labels[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, by_label, repeat_sorted, 1)
    keep = valid & ~repeat
    rank = np.cumsum(keep, axis=1) - 1
    rows, cols = np.nonzero(keep & (rank < n))
    out_labels = np.full((q, n), NEW, dtype=np.int64)
    out_scores = np.full((q, n), -np.inf, dtype=np.float32)
    out_labels[rows, rank[rows, cols]] = labels[rows, cols]
    out_scores[rows, rank[rows, cols]] = sims[rows, cols]
    n_found = np.minimum(keep.sum(axis=1), n)
    for row in np.flatnonzero(n_found < n):
        present = set(out_labels[row, : n_found[row]].tolist())
        extra = [c for c in fill if c not in present][: n - n_found[row]]
        if len(extra) < n - n_found[row]:
            raise ValueError(f"not enough fill labels to complete {n} distinct predictions")
        out_labels[row, n_found[row] :] = extra
    return out_labels, out_scores


def new_positions(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(Q, T): where new_individual goes, = number of candidates scoring at or above each threshold."""
    return (scores[:, :, None] >= np.asarray(thresholds, dtype=np.float32)[None, None, :]).sum(axis=1)


def sweep_scores(labels: np.ndarray, scores: np.ndarray, truth: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per-query precision@5 for every threshold at once, (Q, T). ``truth`` uses :data:`NEW` for new individuals."""
    truth = np.asarray(truth)
    p = new_positions(scores, np.asarray(thresholds))
    n = labels.shape[1]
    match = labels == truth[:, None]
    rank = np.where(match.any(axis=1), match.argmax(axis=1), n)[:, None]
    known_pos = np.where(rank < p, rank, rank + 1)
    known = np.where((rank < n) & (known_pos < n), 1.0 / (known_pos + 1), 0.0)
    new = np.where(p < n, 1.0 / (p + 1), 0.0)
    return np.where((truth == NEW)[:, None], new, known)


def sweep(
    labels: np.ndarray, scores: np.ndarray, truth: np.ndarray, thresholds: Sequence[float], new_ratio: float
) -> pd.DataFrame:
    """MAP@5 per threshold: overall, on known and on new individuals, and the ``new_ratio``-weighted blend.

    The weighted score re-weights validation to a test set with ``new_ratio`` new individuals:
    ``new_ratio * MAP(new) + (1 - new_ratio) * MAP(known)``; when validation has only one kind, that kind's MAP.
    """
    per_query = sweep_scores(labels, scores, truth, thresholds)
    is_new = np.asarray(truth) == NEW
    overall = per_query.mean(axis=0)
    known = per_query[~is_new].mean(axis=0) if (~is_new).any() else np.full(len(thresholds), np.nan)
    new = per_query[is_new].mean(axis=0) if is_new.any() else np.full(len(thresholds), np.nan)
    if is_new.any() and (~is_new).any():
        weighted = new_ratio * new + (1.0 - new_ratio) * known
    else:
        weighted = overall
    return pd.DataFrame(
        {"threshold": np.asarray(thresholds, dtype=float), "map5": weighted, "map5_unweighted": overall,
         "map5_known": known, "map5_new": new}
    )  # fmt: skip


def best_threshold(table: pd.DataFrame) -> float:
    """The threshold with the highest weighted MAP@5 (the lowest such threshold on ties)."""
    return float(table["threshold"].iloc[int(np.argmax(table["map5"].to_numpy()))])


def predict(labels: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Five distinct predictions per query (Q, 5) with :data:`NEW` inserted at the threshold."""
    p = new_positions(scores, np.array([threshold]))[:, 0]
    n = labels.shape[1]
    out = np.empty_like(labels)
    for j in range(n):
        before = labels[:, j]
        after = labels[:, j - 1] if j > 0 else labels[:, 0]
        out[:, j] = np.where(j < p, before, np.where(j == p, NEW, after))
    return out


def predict_from_neighbors(
    sims: np.ndarray, neighbors: np.ndarray, gallery_labels: np.ndarray, threshold: float
) -> np.ndarray:
    """The whole rule in one call: candidates (filled with the gallery's most frequent labels), then
    :func:`predict` at ``threshold``. (Q, 5) class numbers with :data:`NEW`."""
    labels, scores = top_candidates(sims, neighbors, gallery_labels, most_frequent(gallery_labels))
    return predict(labels, scores, threshold)
