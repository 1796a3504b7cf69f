"""Faiss search against brute force."""

from __future__ import annotations

import os

import numpy as np
import pytest

from whaleid.config import KnnConfig
from whaleid.core.errors import ConfigError
from whaleid.retrieval.search import build_index, search


def unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(gallery, queries, k):
    sims = queries @ gallery.T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, 1), idx


def test_flat_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    gallery, queries = unit(rng, 500, 32), unit(rng, 80, 32)
    sims, idx = search(gallery, queries, KnnConfig(k=10))
    want_sims, want_idx = brute_force(gallery, queries, 10)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    assert (idx == want_idx).mean() > 0.999  # only exact ties may swap


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_have_high_recall(kind: str) -> None:
    rng = np.random.default_rng(1)
    gallery, queries = unit(rng, 3000, 16), unit(rng, 100, 16)
    _, idx = search(gallery, queries, KnnConfig(k=5, index=kind, ivf_nlist=32, ivf_nprobe=16))
    _, want = brute_force(gallery, queries, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, want, strict=True)])
    assert recall > 0.9


def test_k_larger_than_gallery_is_clipped() -> None:
    rng = np.random.default_rng(2)
    sims, idx = search(unit(rng, 3, 8), unit(rng, 4, 8), KnnConfig(k=50))
    assert sims.shape == (4, 3) and set(idx[0]) == {0, 1, 2}


def test_bad_inputs() -> None:
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="dimension"):
        search(unit(rng, 5, 8), unit(rng, 2, 4), KnnConfig(k=2))
    bad = unit(rng, 5, 8)
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        search(bad, unit(rng, 2, 8), KnnConfig(k=2))


def test_unknown_index_type_rejected() -> None:
    cfg = KnnConfig()
    object.__setattr__(cfg, "index", "annoy")
    with pytest.raises(ConfigError, match="unknown Faiss index type 'annoy'"):
        build_index(unit(np.random.default_rng(4), 5, 8), cfg)


def test_auto_workers() -> None:
    import torch

    from whaleid.core.device import resolve_workers

    assert resolve_workers(3, torch.device("cpu")) == 3  # explicit values are kept
    cores = len(os.sched_getaffinity(0))
    want = 0 if cores <= 2 else min(8, cores - 1)
    assert resolve_workers(-1, torch.device("cpu"), training=True) == want


def test_ivfpq_finds_the_same_individuals_on_clustered_vectors(caplog: pytest.LogCaptureFixture) -> None:
    """IVF-PQ stores pq_m bytes a vector, so it is approximate even where IVF-Flat is exact: on identity-like
    clusters (what embeddings are) the brute-force top-1 must still be its top-1 almost always, and a pq_m that does
    not divide the dimension falls back to the largest divisor below it."""
    rng = np.random.default_rng(3)
    centres = unit(rng, 300, 24)
    ids = rng.integers(0, 300, 3000)
    gallery = centres[ids] + 0.05 * rng.normal(size=(3000, 24)).astype(np.float32)
    queries = centres[rng.integers(0, 300, 100)] + 0.05 * rng.normal(size=(100, 24)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with caplog.at_level("INFO"):
        _, idx = search(gallery, queries, KnnConfig(k=5, index="ivfpq", ivf_nlist=32, ivf_nprobe=32, pq_m=10))
    assert "knn.pq_m 10 does not divide the embedding size 24: using 8" in caplog.text
    _, want = brute_force(gallery, queries, 5)
    assert np.mean(ids[idx[:, 0]] == ids[want[:, 0]]) > 0.95  # the same individual first
