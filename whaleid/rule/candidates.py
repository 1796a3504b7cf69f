"""Candidates: each query's five best distinct individuals and their scores, from its scored neighbours.

``threshold.scoring``: ``max`` ranks individuals by their best similarity (:func:`top_candidates`), ``vote`` by a
weighted vote over the top-k (:func:`vote_candidates`). Neighbours are taken in *descending* score (the reference
notebook sorted validation ascending); rows with fewer than five individuals are filled with the most frequent
training individuals they do not hold yet, so the five are always distinct. A gallery of fewer than five
individuals leaves the last slots :data:`NONE` (no candidate, scored ``-inf``): they are never shown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NEW = -1  # new_individual among class numbers
NONE = -2  # no candidate: every individual of the gallery is already in the row
N_PRED = 5


def most_frequent(labels: np.ndarray, n: int = 20) -> list:
    """The ``n`` most frequent labels, ties broken by the smaller label (deterministic): the fill for short rows."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    order = np.lexsort((values, -counts))
    return values[order][:n].tolist()


def _fill_short_rows(out_labels: np.ndarray, n_found: np.ndarray, fill: Sequence[int]) -> None:
    """Complete rows with fewer than ``n`` candidates, in place, with ``fill`` labels they do not hold yet (then
    :data:`NONE` when ``fill`` runs out)."""
    n = out_labels.shape[1]
    for row in np.flatnonzero(n_found < n):
        present = set(out_labels[row, : n_found[row]].tolist())
        extra = [c for c in fill if c not in present][: n - n_found[row]]
        extra += [NONE] * (n - n_found[row] - len(extra))  # a gallery of fewer than n individuals
        out_labels[row, n_found[row] :] = extra


def top_candidates(
    sims: np.ndarray, gallery_rows: np.ndarray, gallery_labels: np.ndarray, fill: Sequence[int], n: int = N_PRED
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` distinct individuals per query, with their best similarity.

    Args:
        sims: (Q, k) similarities from the kNN search.
        gallery_rows: (Q, k) gallery row of each neighbour; -1 marks "no neighbour" (as Faiss returns).
        gallery_labels: (N,) class number of every gallery row.
        fill: class numbers to fill short rows with, best first (e.g. most frequent individuals).
        n: candidates per query.

    Returns:
        labels (Q, n) int64 and scores (Q, n) float32; filled slots score ``-inf``.
    """
    sims = np.asarray(sims, dtype=np.float32)
    gallery_rows = np.asarray(gallery_rows)
    q = sims.shape[0]
    if not (sims[:, :-1] >= sims[:, 1:]).all():  # Faiss returns rows best first; sort only when they are not
        order = np.argsort(-sims, axis=1, kind="stable")
        sims = np.take_along_axis(sims, order, 1)
        gallery_rows = np.take_along_axis(gallery_rows, order, 1)
    valid = gallery_rows >= 0
    labels = np.asarray(gallery_labels)[np.clip(gallery_rows, 0, None)]
    out_labels = np.full((q, n), NEW, dtype=np.int64)
    out_scores = np.full((q, n), -np.inf, dtype=np.float32)
    n_found = np.zeros(q, dtype=np.int64)
    # n passes over the (Q, k) block: take each row's first still-available neighbour (the best, rows being
    # sorted), then make every neighbour of that individual unavailable. Faster than sorting by label.
    rows = np.arange(q)
    avail = valid.copy()
    for j in range(n):
        first = avail.argmax(axis=1)
        has = avail[rows, first]
        if not has.any():
            break
        lab = labels[rows, first]
        out_labels[has, j] = lab[has]
        out_scores[has, j] = sims[rows[has], first[has]]
        n_found += has
        avail &= labels != lab[:, None]
    _fill_short_rows(out_labels, n_found, fill)
    return out_labels, out_scores


def vote_candidates(
    sims: np.ndarray,
    gallery_rows: np.ndarray,
    gallery_labels: np.ndarray,
    fill: Sequence[int],
    *,
    power: float = 4.0,
    n: int = N_PRED,
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`top_candidates`, but individuals are ranked by a weighted vote over all ``k`` neighbours:
    ``vote(c) = sum of max(sim, 0) ** power`` over the neighbours showing ``c`` (ties: the better best
    similarity, then the smaller label).

    The score of the candidate at rank ``j`` (compared with the new_individual threshold) is the smallest best
    similarity among the candidates at ranks ``0..j``, so scores never rise along a row and new_individual still
    goes before the first candidate below the threshold.
    """
    sims = np.asarray(sims, dtype=np.float32)
    gallery_rows = np.asarray(gallery_rows)
    q, k = sims.shape
    valid = gallery_rows >= 0
    rows = np.repeat(np.arange(q), k).reshape(q, k)[valid]
    labels = np.asarray(gallery_labels)[gallery_rows[valid]].astype(np.int64)
    s = sims[valid]
    # Group (row, label); a group's best similarity is its maximum.
    groups, inverse = np.unique(np.stack([rows, labels], axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    votes = np.bincount(inverse, weights=np.maximum(s, 0.0).astype(np.float64) ** power, minlength=len(groups))
    best = np.full(len(groups), -np.inf, dtype=np.float32)
    np.maximum.at(best, inverse, s)
    g_rows, g_labels = groups[:, 0], groups[:, 1]
    order = np.lexsort((g_labels, -best, -votes, g_rows))
    g_rows, g_labels, best = g_rows[order], g_labels[order], best[order]
    starts = np.searchsorted(g_rows, np.arange(q))
    rank = np.arange(len(g_rows)) - starts[g_rows]
    take = rank < n
    out_labels = np.full((q, n), NEW, dtype=np.int64)
    out_scores = np.full((q, n), -np.inf, dtype=np.float32)
    out_labels[g_rows[take], rank[take]] = g_labels[take]
    out_scores[g_rows[take], rank[take]] = best[take]
    out_scores = np.minimum.accumulate(out_scores, axis=1)
    n_found = np.bincount(g_rows[take], minlength=q)
    _fill_short_rows(out_labels, n_found, fill)
    return out_labels, out_scores


def candidates(
    sims: np.ndarray,
    gallery_rows: np.ndarray,
    gallery_labels: np.ndarray,
    scoring: str = "max",
    power: float = 4.0,
    n: int = N_PRED,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (five) candidates and their scores per query by ``scoring`` (``max`` or ``vote``), short rows filled
    with the gallery's most frequent individuals."""
    fill = most_frequent(gallery_labels, max(20, n))
    if scoring == "vote":
        return vote_candidates(sims, gallery_rows, gallery_labels, fill, power=power, n=n)
    return top_candidates(sims, gallery_rows, gallery_labels, fill, n=n)
