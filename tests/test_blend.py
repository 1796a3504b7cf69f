"""kNN + classifier blend (whaleid.retrieval.blend) against naive per-query loops and the ArcFace head itself."""

import numpy as np
import pytest
import torch

from whaleid.config import KnnConfig
from whaleid.model.heads import ArcFace
from whaleid.retrieval.blend import Centres, blend_neighbours, mean_cosines
from whaleid.retrieval.search import search
from whaleid.rule.candidates import top_candidates


def unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def naive_blend(sims, neighbors, gallery_labels, cos, w, extra):
    """Per query, per neighbour and per class, in plain Python: the reference for blend_neighbours."""
    out = []
    for q in range(len(sims)):
        scored = []
        shown = set()
        valid_sims = [float(s) for s, n in zip(sims[q], neighbors[q], strict=True) if n >= 0]
        gaps = [
            float(cos[q, gallery_labels[n]]) - float(s)
            for s, n in zip(sims[q], neighbors[q], strict=True)
            if n >= 0 and not np.isnan(cos[q, gallery_labels[n]])
        ]
        offset = sum(gaps) / len(gaps) if gaps else 0.0
        for s, n in zip(sims[q], neighbors[q], strict=True):
            if n < 0:
                continue
            c = int(gallery_labels[n])
            shown.add(c)
            centre = float(s) + offset if np.isnan(cos[q, c]) else float(cos[q, c])
            scored.append((w * float(s) + (1 - w) * centre, int(n)))
        floor = min(valid_sims) if valid_sims else 0.0
        classes = [
            c
            for c in range(cos.shape[1])
            if not np.isnan(cos[q, c]) and c not in shown and c in set(gallery_labels.tolist())
        ]
        classes.sort(key=lambda c: -cos[q, c])
        for c in classes[:extra]:
            first = int(np.flatnonzero(gallery_labels == c)[0])
            scored.append((w * floor + (1 - w) * float(cos[q, c]), first))
        out.append(sorted(scored, key=lambda t: -t[0]))
    return out


@pytest.mark.parametrize("w", [0.0, 0.3, 0.8])
@pytest.mark.parametrize("subcenters", [1, 3])
def test_blend_matches_naive_loop(w, subcenters):
    rng = np.random.default_rng(int(w * 10) + subcenters)
    n_classes, d = 12, 8
    gallery_labels = rng.integers(0, n_classes - 1, size=40)  # the last class has no gallery photo
    gallery, queries = unit(rng, 40, d), unit(rng, 9, d)
    trained = np.ones(n_classes, dtype=bool)
    trained[[2, 5]] = False  # e.g. validation-only individuals: their centres are never trained
    centres = Centres(unit(rng, n_classes * subcenters, d), subcenters, trained)
    sims, neighbors = search(gallery, queries, KnnConfig(k=6))
    neighbors[0, -1] = -1  # a "no neighbour" slot, as Faiss returns for short galleries
    sims[0, -1] = -3.4e38
    cos = centres.cosines(queries)
    got_s, got_r = blend_neighbours(
        sims,
        neighbors,
        gallery_labels,
        class_cosines=mean_cosines([(queries, centres)]),
        knn_weight=w,
        extra=4,
        chunk=4,
    )
    want = naive_blend(sims, neighbors, gallery_labels, cos, w, extra=4)
    assert got_s.shape == (9, 10)
    for q, ref in enumerate(want):
        n = len(ref)
        np.testing.assert_allclose(got_s[q, :n], [s for s, _ in ref], rtol=1e-6, atol=1e-6)
        assert sorted(got_r[q, :n].tolist()) == sorted(r for _, r in ref)
        assert (got_r[q, n:] == -1).all() and np.isneginf(got_s[q, n:]).all()


def test_centre_cosines_equal_the_arcface_head():
    torch.manual_seed(0)
    head = ArcFace(16, 7, subcenters=3)
    emb = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    centres = Centres(torch.nn.functional.normalize(head.weight.detach(), dim=1).numpy(), 3, np.ones(7, dtype=bool))
    np.testing.assert_allclose(centres.cosines(emb.numpy()), head.cosine(emb).detach().numpy(), atol=1e-6)


def test_ensemble_mean_counts_only_models_that_trained_on_the_class():
    rng = np.random.default_rng(3)
    q1, q2 = unit(rng, 4, 8), unit(rng, 4, 8)
    t1, t2 = np.array([True, True, False, True]), np.array([True, False, False, True])
    c1, c2 = Centres(unit(rng, 4, 8), 1, t1), Centres(unit(rng, 4, 8), 1, t2)
    got = mean_cosines([(q1, c1), (q2, c2)])(slice(0, 4))
    a, b = q1 @ c1.centres.T, q2 @ c2.centres.T
    np.testing.assert_allclose(got[:, 0], (a[:, 0] + b[:, 0]) / 2, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], a[:, 1], atol=1e-6)  # only model 1 trained on class 1
    assert np.isnan(got[:, 2]).all()  # nobody did
    with pytest.raises(ValueError, match="number of classes"):
        mean_cosines([(q1, c1), (q2, Centres(unit(rng, 3, 8), 1, np.ones(3, dtype=bool)))])


def test_classifier_only_ranks_individuals_by_centre_cosine():
    """knn_weight 0 with enough extra classes: the five candidates are the five classes nearest by centre cosine,
    whatever the neighbours say (hand-checkable: argsort of the cosines)."""
    rng = np.random.default_rng(5)
    n_classes, d = 10, 6
    gallery_labels = np.repeat(np.arange(n_classes), 3)
    gallery, queries = unit(rng, 30, d), unit(rng, 8, d)
    centres = Centres(unit(rng, n_classes, d), 1, np.ones(n_classes, dtype=bool))
    sims, neighbors = search(gallery, queries, KnnConfig(k=4))
    s, r = blend_neighbours(
        sims, neighbors, gallery_labels, class_cosines=mean_cosines([(queries, centres)]), knn_weight=0.0, extra=5
    )
    labels, scores = top_candidates(s, r, gallery_labels, fill=list(range(n_classes)))
    want = np.argsort(-(queries @ centres.centres.T), axis=1)[:, :5]
    np.testing.assert_array_equal(labels, want)


def test_knn_only_weight_keeps_the_knn_ranking():
    rng = np.random.default_rng(6)
    gallery_labels = rng.integers(0, 5, size=20)
    gallery, queries = unit(rng, 20, 4), unit(rng, 6, 4)
    centres = Centres(unit(rng, 5, 4), 1, np.ones(5, dtype=bool))
    sims, neighbors = search(gallery, queries, KnnConfig(k=8))
    s, r = blend_neighbours(
        sims, neighbors, gallery_labels, class_cosines=mean_cosines([(queries, centres)]), knn_weight=1.0, extra=0
    )
    np.testing.assert_array_equal(r, neighbors)
    np.testing.assert_allclose(s, sims, atol=1e-7)
