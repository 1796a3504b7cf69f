"""k-reciprocal re-ranking: the sparse, Faiss-based version against the definitions computed literally on the
full distance matrix, and a hand-checkable case of k-reciprocal neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from whaleid.config import KnnConfig
from whaleid.core.errors import ConfigError
from whaleid.retrieval.rerank import _reciprocal, dense_reference, k_reciprocal, rerank_neighbours
from whaleid.retrieval.search import search


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_reciprocal_neighbours_by_hand() -> None:
    # Nearest lists (itself first): 0 -> 1, 2; 1 -> 0, 3; 2 -> 3, 0; 3 -> 2, 1. With k = 1 (two entries):
    # 0 and 1 name each other, 2 and 3 name each other.
    nb = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0], [3, 2, 1]])
    assert sorted(_reciprocal(nb, 0, 2)) == [0, 1]
    assert sorted(_reciprocal(nb, 2, 2)) == [2, 3]
    # With k = 2 (three entries): 0's list is 0, 1, 2; 2's list holds 0, 1's holds 0: all reciprocal.
    assert sorted(_reciprocal(nb, 0, 3)) == [0, 1, 2]


@pytest.mark.parametrize(("k1", "k2", "lam"), [(6, 3, 0.3), (4, 1, 0.0), (8, 2, 1.0)])
def test_sparse_equals_the_dense_definition(k1: int, k2: int, lam: float) -> None:
    rng = np.random.default_rng(k1)
    centres = rng.normal(size=(12, 16))
    gallery = unit(centres[rng.integers(0, 12, 60)] + 0.6 * rng.normal(size=(60, 16)))
    query = unit(centres[rng.integers(0, 12, 15)] + 0.6 * rng.normal(size=(15, 16)))
    want = dense_reference(query, gallery, k1, k2, lam)
    cand = np.argsort(-(query @ gallery.T), axis=1)[:, :10]
    cand[3, 7:] = -1  # slots without a candidate stay empty
    got = k_reciprocal(query, gallery, cand, k1=k1, k2=k2, lam=lam)
    expect = np.take_along_axis(want, np.clip(cand, 0, None), 1)
    expect[3, 7:] = np.inf
    np.testing.assert_allclose(got, expect, atol=1e-5)
    if lam == 1.0:  # no Jaccard term: the plain distance, so the kNN order is kept
        assert (np.diff(got[:, :7], axis=1) >= -1e-6).all()


def _pipeline_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(10, 16))
    gallery = unit(centres[rng.integers(0, 10, 50)] + 0.7 * rng.normal(size=(50, 16)))
    query = unit(centres[rng.integers(0, 10, 12)] + 0.7 * rng.normal(size=(12, 16)))
    sims, rows = search(gallery, query, KnnConfig(k=8))
    return query, gallery, sims, rows


def test_rerank_param_orders_the_top_k_by_the_dense_final_distance() -> None:
    query, gallery, sims, rows = _pipeline_case()
    cfg = KnnConfig(k=8, rerank="k_reciprocal", rerank_k1=5, rerank_k2=2, rerank_lambda=0.3)
    got_sims, got_rows = rerank_neighbours(query, gallery, sims, rows, cfg)
    dense = dense_reference(query, gallery, 5, 2, 0.3)
    for i in range(len(query)):  # the same candidates, sorted by the literal definition's distance
        want = sorted(rows[i].tolist(), key=lambda g: dense[i, g])
        assert got_rows[i].tolist() == want
        np.testing.assert_allclose(got_sims[i], 1.0 - 2.0 * dense[i, want], atol=1e-5)


def test_rerank_none_or_lambda_one_keeps_the_cosine() -> None:
    query, gallery, sims, rows = _pipeline_case()
    same = rerank_neighbours(query, gallery, sims, rows, KnnConfig(k=8))
    assert same[0] is sims and same[1] is rows
    plain_sims, plain_rows = rerank_neighbours(
        query, gallery, sims, rows, KnnConfig(k=8, rerank="k_reciprocal", rerank_lambda=1.0)
    )
    np.testing.assert_array_equal(plain_rows, rows)
    np.testing.assert_allclose(plain_sims, sims, atol=1e-5)  # 1 - 2 * (1 - cos) / 2 = cos


def test_rerank_params_are_checked() -> None:
    with pytest.raises(ConfigError, match="knn.rerank must be one of none, k_reciprocal"):
        KnnConfig(rerank="kreciprocal")
    with pytest.raises(ConfigError, match="knn.rerank_k2 must be in"):
        KnnConfig(rerank_k1=4, rerank_k2=9)
