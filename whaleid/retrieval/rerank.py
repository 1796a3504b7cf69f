"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR
2017), in memory that grows with the number of photos times k, not with its square.

Definitions, over the photos ``X`` = queries then gallery (unit vectors), with the distance
``d(i, j) = (1 - cos(i, j)) / 2`` in [0, 1]:

* ``N(i, k)``: the ``k + 1`` nearest photos of ``i`` (itself first); ``R(i, k)``: those ``j`` in ``N(i, k)`` with
  ``i`` in ``N(j, k)`` (k-reciprocal neighbours).
* ``R*(i)``: ``R(i, k1)`` grown by ``R(c, round(k1 / 2))`` for each ``c`` in it whose own set shares more than 2/3
  of its members with ``R(i, k1)``.
* ``V[i]``: ``exp(-d(i, j))`` on ``R*(i)``, normalised to sum 1; then (``k2 > 1``) replaced by the mean of
  ``V`` over ``N(i, k2 - 1)`` (local query expansion).
* Jaccard distance ``dJ(i, j) = 1 - sum(min(V[i], V[j])) / sum(max(V[i], V[j]))``, and the final distance
  ``(1 - lambda) * dJ + lambda * d``.

The original works on the full (Q + G)^2 distance matrix (1.6 GB at 10k + 10k photos, several copies at once).
Here neighbour lists come from one Faiss search of ``k1 + 1`` per photo, ``V`` is a sparse matrix, and the
Jaccard distance is computed only for the (query, candidate) pairs the kNN search proposed.
:func:`dense_reference` follows the definitions literally with the full matrix (for tests and the benchmark).

:func:`rerank_neighbours` is the pipeline's ``knn.rerank: k_reciprocal``: it re-orders each query's top-k by the
final distance, reported as the similarity ``1 - 2 * distance`` (with ``lambda = 1`` that is the cosine itself), so
the blend, the local-feature fusion and the threshold sweep that follow keep working on one scale. The queries
searched together are part of the photo set ``X`` (their neighbours among each other count), as in the paper: a
photo identified alone can rank differently than within the whole test set.
"""

from __future__ import annotations

import faiss
import numpy as np
import scipy.sparse as sp

from whaleid.config import KnnConfig


def _distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.clip((1.0 - x @ y.T) / 2.0, 0.0, 1.0)


def _reciprocal(neighbours: np.ndarray, i: int, width: int) -> np.ndarray:
    forward = neighbours[i, :width]
    return forward[(neighbours[forward, :width] == i).any(axis=1)]


def _expanded(neighbours: np.ndarray, i: int, k1: int) -> np.ndarray:
    base = _reciprocal(neighbours, i, k1 + 1)
    parts = [base]
    half = int(round(k1 / 2)) + 1
    for c in base:
        cand = _reciprocal(neighbours, int(c), half)
        if len(np.intersect1d(cand, base)) > 2 / 3 * len(cand):
            parts.append(cand)
    return np.unique(np.concatenate(parts))


def encodings(x: np.ndarray, neighbours: np.ndarray, k1: int, k2: int) -> sp.csr_matrix:
    """The (N, N) sparse ``V`` (rows sum to 1) from unit vectors ``x`` and each photo's nearest photos
    ``neighbours`` (N, >= k1 + 1), itself first."""
    n = len(x)
    rows, cols, vals = [], [], []
    for i in range(n):
        members = _expanded(neighbours, i, k1)
        w = np.exp(-_distance(x[i : i + 1], x[members])[0])
        rows.append(np.full(len(members), i))
        cols.append(members)
        vals.append(w / w.sum())
    v = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    if k2 > 1:
        expand = sp.csr_matrix(
            (np.full(n * k2, 1.0 / k2), (np.repeat(np.arange(n), k2), neighbours[:, :k2].ravel())), shape=(n, n)
        )
        v = (expand @ v).tocsr()
    return v


def _min_sum(v: sp.csr_matrix, i: int, j: int) -> float:
    a, b = slice(v.indptr[i], v.indptr[i + 1]), slice(v.indptr[j], v.indptr[j + 1])
    _, ia, ib = np.intersect1d(v.indices[a], v.indices[b], assume_unique=True, return_indices=True)
    return float(np.minimum(v.data[a][ia], v.data[b][ib]).sum())


def k_reciprocal(
    query: np.ndarray, gallery: np.ndarray, candidates: np.ndarray, *, k1: int = 20, k2: int = 6, lam: float = 0.3
) -> np.ndarray:
    """Final distances (Q, k) between each query and its ``candidates`` (gallery rows, -1 = none: +inf).
    Memory: O((Q + G) * k1 * k2) for the encodings, plus the inputs."""
    x = np.ascontiguousarray(np.vstack([query, gallery]), dtype=np.float32)
    q = len(query)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, neighbours = index.search(x, min(len(x), k1 + 1))
    v = encodings(x, neighbours, k1, k2)
    out = np.full(candidates.shape, np.inf)
    for i in range(q):
        for col, g in enumerate(candidates[i]):
            if g < 0:
                continue
            m = _min_sum(v, i, q + int(g))
            jaccard = 1.0 - m / (2.0 - m)
            out[i, col] = (1.0 - lam) * jaccard + lam * _distance(x[i : i + 1], x[q + int(g) : q + int(g) + 1])[0, 0]
    return out


def rerank_neighbours(
    query: np.ndarray, gallery: np.ndarray, sims: np.ndarray, rows: np.ndarray, cfg: KnnConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The kNN results (``sims``, ``rows``: (Q, k), rows -1 = none) re-ordered by ``cfg.rerank`` (``none``: as
    they are), with similarities ``1 - 2 * final distance``, best first."""
    if cfg.rerank == "none" or len(query) == 0:
        return sims, rows
    dist = k_reciprocal(query, gallery, rows, k1=cfg.rerank_k1, k2=cfg.rerank_k2, lam=cfg.rerank_lambda)
    order = np.argsort(dist, axis=1, kind="stable")
    new = np.where(np.isfinite(dist), 1.0 - 2.0 * dist, -np.inf).astype(np.float32)
    return np.take_along_axis(new, order, 1), np.take_along_axis(np.asarray(rows), order, 1)


def dense_reference(query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3) -> np.ndarray:
    """The definitions above on the full distance matrix: (Q, G) final distances. O((Q + G)^2) memory."""
    x = np.vstack([query, gallery]).astype(np.float64)
    n, q = len(x), len(query)
    d = _distance(x, x)
    rank = np.argsort(d, axis=1, kind="stable")

    def near(i: int, k: int) -> set[int]:
        return {int(j) for j in rank[i, : k + 1]}

    def recip(i: int, k: int) -> set[int]:
        return {j for j in near(i, k) if i in near(j, k)}

    v = np.zeros((n, n))
    for i in range(n):
        members = recip(i, k1)
        for c in list(members):
            grown = recip(c, int(round(k1 / 2)))
            if len(grown & recip(i, k1)) > 2 / 3 * len(grown):
                members |= grown
        idx = np.array(sorted(members))
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    out = np.zeros((q, n - q))
    for i in range(q):
        for j in range(q, n):
            mins = np.minimum(v[i], v[j]).sum()
            maxs = np.maximum(v[i], v[j]).sum()
            out[i, j - q] = (1 - lam) * (1 - mins / maxs) + lam * d[i, j]
    return out
