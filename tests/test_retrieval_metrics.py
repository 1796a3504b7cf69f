"""Retrieval metrics (recall@k, mAP, mINP) against a brute-force reference and a hand-computed case."""

import numpy as np
import pytest

from whaleid.config import KnnConfig
from whaleid.retrieval.search import search
from whaleid.rule.metrics import retrieval_metrics


def brute_force(gallery, queries, gallery_labels, query_labels):
    """Full ranking of every gallery photo by cosine, metrics by their textbook definitions, one query at a time."""
    r1, r5, aps, inps = [], [], [], []
    for q, label in zip(queries, query_labels, strict=True):
        order = np.argsort(-(gallery @ q), kind="stable")
        correct = [rank + 1 for rank, g in enumerate(order) if gallery_labels[g] == label]
        if not correct:
            continue
        r1.append(correct[0] == 1)
        r5.append(correct[0] <= 5)
        aps.append(np.mean([(i + 1) / r for i, r in enumerate(correct)]))
        inps.append(len(correct) / correct[-1])
    return {
        "recall_at_1": np.mean(r1),
        "recall_at_5": np.mean(r5),
        "map": np.mean(aps),
        "minp": np.mean(inps),
        "queries": len(r1),
    }


def test_hand_computed_case():
    # One query of individual 7; gallery ranked: other, 7, other, 7 (ranks 2 and 4 correct, G = 2).
    sims = np.array([[0.9, 0.8, 0.7, 0.6]])
    neighbors = np.array([[0, 1, 2, 3]])
    gallery_labels = np.array([3, 7, 4, 7])
    got = retrieval_metrics(sims, neighbors, gallery_labels, np.array([7]))
    assert got["recall_at_1"] == 0 and got["recall_at_5"] == 1
    assert got["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)  # AP = (1/2 + 2/4) / 2 = 0.5
    assert got["minp"] == pytest.approx(2 / 4)  # G / rank of the hardest correct photo
    # A new individual (no gallery photo) is not counted; a correct photo beyond the top-k: AP counts it missed.
    got = retrieval_metrics(sims[:, :3], neighbors[:, :3], gallery_labels, np.array([7]))
    assert got["map"] == pytest.approx(1 / 2 / 2) and got["minp"] == 0
    assert retrieval_metrics(sims, neighbors, gallery_labels, np.array([99]))["queries"] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_brute_force_when_k_covers_the_gallery(seed):
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(60, 8)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = rng.normal(size=(25, 8)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    gallery_labels = rng.integers(0, 12, size=60)
    query_labels = rng.integers(0, 14, size=25)  # 12, 13: new individuals
    sims, neighbors = search(gallery, queries, KnnConfig(k=60))
    got = retrieval_metrics(sims, neighbors, gallery_labels, query_labels)
    want = brute_force(gallery, queries, gallery_labels, query_labels)
    assert got["queries"] == want["queries"]
    for key in ("recall_at_1", "recall_at_5", "map", "minp"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    # With a shorter list every metric is a lower bound.
    short = retrieval_metrics(sims[:, :10], neighbors[:, :10], gallery_labels, query_labels)
    assert all(short[key] <= got[key] + 1e-9 for key in ("recall_at_1", "recall_at_5", "map", "minp"))


def test_pooled_weights_parts_by_their_known_queries():
    from whaleid.retrieval.neighbours import Neighbours
    from whaleid.rule.metrics import pooled_retrieval_metrics

    a = Neighbours(np.array([[0.9, 0.1]]), np.array([[0, 1]]), np.array([1, 2]), np.array([1]))
    b = Neighbours(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([[0, 1], [0, 1]]), np.array([1, 2]), np.array([2, 2]))
    got = pooled_retrieval_metrics([a, b])
    assert got["queries"] == 3 and got["recall_at_1"] == pytest.approx(1 / 3)
