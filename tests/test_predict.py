"""Candidate building, prediction and the vectorised threshold sweep against naive per-image loops."""

from __future__ import annotations

import numpy as np
import pytest
from references import naive_predictions

from whaleid.rule.candidates import top_candidates, vote_candidates
from whaleid.rule.metrics import precision_at_5
from whaleid.rule.predict import (
    NEW,
    best_threshold,
    fit_rule,
    predict,
    query_thresholds,
    share_threshold,
    species_thresholds,
    sweep,
    sweep_scores,
)


def random_case(rng, q=200, k=12, n_gallery=60, n_classes=15):
    gallery_labels = rng.integers(0, n_classes, n_gallery)
    neighbors = np.stack([rng.choice(n_gallery, k, replace=False) for _ in range(q)])
    neighbors[rng.random((q, k)) < 0.05] = -1  # faiss "missing" slots
    sims = rng.uniform(-0.2, 1.0, (q, k)).astype(np.float32)
    truth = rng.integers(-1, n_classes, q)
    fill = [int(x) for x in rng.permutation(n_classes)]
    return sims, neighbors, gallery_labels, fill, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_predict_matches_naive(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sims, nbrs, gl, fill, _ = random_case(rng)
    labels, scores = top_candidates(sims, nbrs, gl, fill)
    for thr in (-1.0, 0.0, 0.35, 0.7, 2.0):
        got = predict(labels, scores, thr).tolist()
        assert got == naive_predictions(sims, nbrs, gl, fill, thr)
        assert all(len(set(row)) == 5 for row in got)


@pytest.mark.parametrize("seed", [3, 4])
def test_sweep_matches_naive_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sims, nbrs, gl, fill, truth = random_case(rng, q=300)
    thresholds = np.round(np.arange(-0.1, 1.05, 0.1), 3)
    labels, scores = top_candidates(sims, nbrs, gl, fill)
    per_query = sweep_scores(labels, scores, truth, thresholds)
    for j, thr in enumerate(thresholds):
        naive = naive_predictions(sims, nbrs, gl, fill, thr)
        expect = [precision_at_5(p, t) for p, t in zip(naive, truth, strict=True)]
        np.testing.assert_allclose(per_query[:, j], expect)
    table = sweep(labels, scores, truth, thresholds, new_ratio=0.3)
    new = truth == NEW
    np.testing.assert_allclose(table["map5"], 0.3 * per_query[new].mean(0) + 0.7 * per_query[~new].mean(0))
    np.testing.assert_allclose(table["map5_unweighted"], per_query.mean(0))


def test_hand_computed_sweep() -> None:
    # One query; neighbours (best first): class 7 @0.9, class 7 @0.8 (repeat), class 3 @0.6, class 5 @0.2.
    sims = np.array([[0.9, 0.8, 0.6, 0.2]], np.float32)
    nbrs = np.array([[0, 1, 2, 3]])
    gl = np.array([7, 7, 3, 5])
    labels, scores = top_candidates(sims, nbrs, gl, fill=[1, 2, 3])
    assert labels.tolist() == [[7, 3, 5, 1, 2]]
    assert predict(labels, scores, 0.5).tolist() == [[7, 3, NEW, 5, 1]]
    # truth 3 -> rank 2 always (new goes after it at thr 0.5) = 0.5; at thr 0.7 new goes second -> 3 is third.
    s = sweep_scores(labels, scores, np.array([3]), [0.5, 0.7])
    np.testing.assert_allclose(s, [[0.5, 1 / 3]])
    # new truth: thr 0.5 -> new third (1/3); 0.95 -> first (1); -1 -> after the 3 real candidates, before the
    # fillers, which never score (1/4).
    s_new = sweep_scores(labels, scores, np.array([NEW]), [0.5, 0.95, -1.0])
    np.testing.assert_allclose(s_new, [[1 / 3, 1.0, 0.25]])


def test_descending_order_enforced() -> None:
    # The reference notebook sorted validation ascending; our rule must not depend on input order.
    sims = np.array([[0.1, 0.9, 0.5]], np.float32)
    labels, scores = top_candidates(sims, np.array([[0, 1, 2]]), np.array([10, 11, 12]), fill=[1, 2, 3])
    assert labels[0, :3].tolist() == [11, 12, 10]
    assert scores[0, :3].tolist() == pytest.approx([0.9, 0.5, 0.1])


def test_best_threshold_picks_max() -> None:
    import pandas as pd

    assert best_threshold(pd.DataFrame({"threshold": [0.1, 0.2, 0.3], "map5": [0.2, 0.5, 0.5]})) == 0.2


def naive_vote(sims, neighbors, gallery_labels, fill, power, threshold):
    """Per-image reference for vote scoring: sum sim**power per individual, rank by (vote, best sim, -label),
    a candidate's score = lowest best-similarity so far, new_individual before the first score below threshold."""
    out = []
    for row_s, row_n in zip(sims, neighbors, strict=True):
        votes: dict[int, float] = {}
        best: dict[int, float] = {}
        for s, n in zip(row_s, row_n, strict=True):
            if n < 0:
                continue
            c = int(gallery_labels[n])
            votes[c] = votes.get(c, 0.0) + max(float(s), 0.0) ** power
            best[c] = max(best.get(c, -np.inf), float(s))
        ranked = sorted(votes, key=lambda c: (-votes[c], -best[c], c))[:5]
        preds, low, inserted = [], np.inf, False
        for c in ranked:
            low = min(low, best[c])
            if not inserted and low < threshold:
                preds.append(NEW)
                inserted = True
            preds.append(c)
        if not inserted:
            preds.append(NEW)
        preds += [f for f in fill if f not in preds]
        out.append(preds[:5])
    return out


@pytest.mark.parametrize("seed", [5, 6])
def test_vote_scoring_matches_naive(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sims, nbrs, gl, fill, _ = random_case(rng, k=20, n_classes=8)
    labels, scores = vote_candidates(sims, nbrs, gl, fill, power=3.0)
    assert (np.diff(scores, axis=1) <= 0).all()  # never rising along a row
    for thr in (-1.0, 0.3, 0.8, 2.0):
        assert predict(labels, scores, thr).tolist() == naive_vote(sims, nbrs, gl, fill, 3.0, thr)


def test_vote_hand_computed() -> None:
    # class 1: one neighbour @0.9; class 2: three @0.8, 0.7, 0.7. With power 1 class 2 wins the vote (2.2 > 0.9)
    # but keeps its best similarity 0.8; class 1 comes second with score min(0.8, 0.9) = 0.8.
    sims = np.array([[0.9, 0.8, 0.7, 0.7]], np.float32)
    labels, scores = vote_candidates(sims, np.array([[0, 1, 2, 3]]), np.array([1, 2, 2, 2]), fill=[5, 6, 7], power=1.0)
    assert labels.tolist() == [[2, 1, 5, 6, 7]]
    np.testing.assert_allclose(scores[0, :2], [0.8, 0.8])
    # With a large power the single 0.9 outweighs three lower neighbours: max-like ranking.
    labels, _ = vote_candidates(sims, np.array([[0, 1, 2, 3]]), np.array([1, 2, 2, 2]), fill=[5, 6, 7], power=16.0)
    assert labels[0, :2].tolist() == [1, 2]


def test_share_threshold_puts_new_first_for_that_share() -> None:
    rng = np.random.default_rng(7)
    scores = np.sort(rng.uniform(0, 1, (1000, 5)), axis=1)[:, ::-1].astype(np.float32)
    labels = np.tile(np.arange(5), (1000, 1))
    thr = share_threshold(scores, 0.16)
    share = (predict(labels, scores, thr)[:, 0] == NEW).mean()
    assert abs(share - 0.16) <= 0.002


def test_per_species_thresholds_match_brute_force() -> None:
    rng = np.random.default_rng(8)
    sims, nbrs, gl, fill, truth = random_case(rng, q=400)
    labels, scores = top_candidates(sims, nbrs, gl, fill)
    species = rng.integers(0, 3, len(truth))
    species[:5] = 9  # a rare species: too few queries, falls back to the global threshold
    grid = [0.0, 0.2, 0.4, 0.6, 0.8]
    found = species_thresholds(
        labels, scores, truth, query_species=species, thresholds=grid, new_ratio=0.2, min_queries=30
    )
    assert set(found) == {0, 1, 2}
    for sp, thr in found.items():
        mask = species == sp
        means = []
        for t in grid:
            per = np.array(
                [
                    precision_at_5(p, tr)
                    for p, tr in zip(naive_predictions(sims[mask], nbrs[mask], gl, fill, t), truth[mask], strict=True)
                ]
            )
            new = truth[mask] == NEW
            means.append(0.2 * per[new].mean() + 0.8 * per[~new].mean())
        assert thr == grid[int(np.argmax(means))]
    per_query = query_thresholds(species, 0.5, found)
    assert per_query[:5].tolist() == [0.5] * 5
    got = predict(labels, scores, per_query)
    for i in range(len(truth)):
        assert got[i].tolist() == naive_predictions(sims[i : i + 1], nbrs[i : i + 1], gl, fill, per_query[i])[0]


# --- the fitted rule: fit on validation (one or several folds), save, apply as saved -----------------------------


def _part(rng: np.random.Generator, q: int = 60, g: int = 90, k: int = 12, n_ids: int = 25):
    from whaleid.retrieval.neighbours import Neighbours

    gallery_labels = rng.integers(0, n_ids, size=g)
    sims = -np.sort(-rng.uniform(0.0, 1.0, size=(q, k)).astype(np.float32), axis=1)
    neighbors = rng.integers(0, g, size=(q, k))
    query_labels = rng.integers(0, n_ids + 8, size=q)  # ids >= n_ids are absent: new individuals
    return Neighbours(sims, neighbors, gallery_labels, query_labels)


def _naive_map5(part, threshold: float, scoring: str = "max") -> np.ndarray:
    """Per-query precision@5 by the naive per-image reference (max scoring)."""
    from whaleid.rule.candidates import most_frequent
    from whaleid.rule.predict import query_truth

    fill = most_frequent(part.gallery_labels)
    preds = naive_predictions(part.sims, part.rows, part.gallery_labels, fill, threshold)
    truth = query_truth(part.query_labels, part.gallery_labels)
    return np.array([precision_at_5([str(x) for x in p], str(t)) for p, t in zip(preds, truth, strict=True)])


def test_fit_rule_pools_folds_out_of_fold_and_reports_each() -> None:
    from whaleid.config import ThresholdConfig
    from whaleid.rule.predict import query_truth

    rng = np.random.default_rng(5)
    parts = [_part(rng), _part(rng, q=40)]
    cfg = ThresholdConfig(step=0.1)
    fit = fit_rule(parts, cfg, new_ratio=0.2, names=["fold0", "fold3"])
    # Reference: every threshold of the grid scored by the naive loop over the pooled queries.
    truths = np.concatenate([query_truth(p.query_labels, p.gallery_labels) for p in parts])
    is_new = truths == NEW

    def weighted(per_query: np.ndarray, new: np.ndarray) -> float:
        return 0.2 * per_query[new].mean() + 0.8 * per_query[~new].mean()

    scores = {t: weighted(np.concatenate([_naive_map5(p, t) for p in parts]), is_new) for t in cfg.grid()}
    best = max(cfg.grid(), key=lambda t: (scores[t], -t))
    assert fit.rule.threshold == pytest.approx(best)
    assert fit.metrics["map5"] == pytest.approx(scores[best], abs=1e-6)
    np.testing.assert_allclose(fit.table["map5"], [scores[t] for t in cfg.grid()], atol=1e-9)
    for name, part in zip(["fold0", "fold3"], parts, strict=True):
        own = _naive_map5(part, best)
        new = query_truth(part.query_labels, part.gallery_labels) == NEW
        assert fit.metrics["folds"][name] == pytest.approx(weighted(own, new), abs=1e-6)
    per_fold = list(fit.metrics["folds"].values())
    assert fit.metrics["folds_mean"] == pytest.approx(np.mean(per_fold), abs=1e-6)
    assert fit.metrics["folds_std"] == pytest.approx(np.std(per_fold), abs=1e-6)
    assert fit.metrics["valid_images"] == 100


def test_rule_is_applied_as_saved() -> None:
    import json

    from whaleid.config import ThresholdConfig
    from whaleid.rule.predict import Rule, apply_rule, candidates

    rng = np.random.default_rng(6)
    valid, test = _part(rng), _part(rng, q=30)
    fit = fit_rule([valid], ThresholdConfig(scoring="vote", vote_power=2.0), new_ratio=0.16)
    saved = Rule.from_dict(json.loads(json.dumps(fit.rule.to_dict())))
    assert saved == fit.rule and saved.scoring == "vote" and saved.vote_power == 2.0
    labels, scores = candidates(test.sims, test.rows, test.gallery_labels, "vote", 2.0)
    np.testing.assert_array_equal(apply_rule(saved, test), predict(labels, scores, saved.threshold))
    # share: the threshold is taken on the queries the rule is applied to.
    share = Rule(method="share", new_ratio=0.3, threshold=0.99)
    labels, scores = candidates(test.sims, test.rows, test.gallery_labels)
    got = apply_rule(share, test)
    np.testing.assert_array_equal(got, predict(labels, scores, share_threshold(scores, 0.3)))
    assert abs((got[:, 0] == NEW).mean() - 0.3) < 0.05
    with pytest.raises(ValueError, match="not a whaleid rule"):
        Rule.from_dict({"threshold": 0.5, "colour": "red"})


def test_per_species_rule_maps_by_species_name() -> None:
    from whaleid.rule.predict import Rule, apply_rule, candidates

    rng = np.random.default_rng(7)
    test = _part(rng)
    class_species = np.array(["orca" if c % 2 else "beluga" for c in range(40)], dtype=object)
    rule = Rule(threshold=0.5, species_thresholds={"orca": 0.9})
    labels, scores = candidates(test.sims, test.rows, test.gallery_labels)
    want = predict(labels, scores, np.where(labels[:, 0] % 2 == 1, 0.9, 0.5))
    np.testing.assert_array_equal(apply_rule(rule, test, class_species), want)
    with pytest.raises(ValueError, match="class_species"):
        apply_rule(rule, test)


def test_validation_without_new_individuals_falls_back_to_the_share_rule_with_a_warning(caplog) -> None:
    from whaleid.config import ThresholdConfig
    from whaleid.retrieval.neighbours import Neighbours
    from whaleid.rule.candidates import candidates

    rng = np.random.default_rng(8)
    part = _part(rng)
    known_only = Neighbours(part.sims, part.rows, part.gallery_labels, part.gallery_labels[:60])
    fit = fit_rule([known_only], ThresholdConfig(), new_ratio=0.25)
    assert fit.rule.method == "share" and fit.metrics["method"] == "share" and fit.metrics["map5_new"] is None
    _, scores = candidates(part.sims, part.rows, part.gallery_labels)
    assert fit.rule.threshold == share_threshold(scores, 0.25)
    assert "validation has no new individuals" in caplog.text and "cv.min_new_share" in caplog.text
    caplog.clear()
    fit_rule([part], ThresholdConfig(), new_ratio=0.25)  # with new individuals: the sweep, silently
    assert "no new individuals" not in caplog.text


def test_oracle_map5_is_the_best_test_score_over_the_grid() -> None:
    from whaleid.rule.predict import oracle_map5, query_truth

    rng = np.random.default_rng(9)
    part = _part(rng)
    truth = query_truth(part.query_labels, part.gallery_labels)
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    best, thr = oracle_map5(part, truth, thresholds=grid)
    naive = {t: _naive_map5(part, t).mean() for t in grid}
    assert best == pytest.approx(max(naive.values())) and naive[thr] == pytest.approx(best)


def test_per_epoch_validation_without_new_individuals_scores_the_fallback_rule() -> None:
    from whaleid.rule.evaluate import cv_score

    rng = np.random.default_rng(10)
    gallery = rng.standard_normal((60, 8)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    labels = np.arange(60) % 12
    queries = gallery[:20] + 0.1 * rng.standard_normal((20, 8)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    score = cv_score(queries, labels[:20], gallery, labels, new_ratio=0.16)  # every query individual is known
    assert 0.0 < score["map5"] <= 1.0 and score["threshold"] not in [round(0.05 * i, 2) for i in range(21)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": "0.3"}, "threshold must be a number"),
        ({"threshold": float("nan")}, "threshold must be a number"),
        ({"threshold": True}, "threshold must be a number"),
        ({"scoring": "bogus"}, "scoring must be max or vote"),
        ({"method": "median"}, "method must be sweep or share"),
        ({"new_ratio": 1.5}, r"new_ratio must be a number in \[0, 1\]"),
        ({"vote_power": 0}, "vote_power must be a number"),
        ({"species_thresholds": {"beluga": None}}, "species_thresholds must be a mapping"),
        ({"extra": 1}, "not a whaleid rule"),
    ],
)
def test_a_saved_rule_is_checked_field_by_field_naming_the_file(change: dict, message: str) -> None:
    from whaleid.core.errors import DataError
    from whaleid.rule.predict import Rule

    saved = Rule(threshold=0.35, species_thresholds={"beluga": 0.4}).to_dict()
    assert Rule.from_dict(saved, "models/rule.json") == Rule(threshold=0.35, species_thresholds={"beluga": 0.4})
    with pytest.raises(DataError, match=f"^models/rule.json: {message}"):
        Rule.from_dict({**saved, **change}, "models/rule.json")


def test_a_gallery_of_three_individuals_ranks_them_and_new_individual_without_filling() -> None:
    from whaleid.rule.candidates import NONE
    from whaleid.rule.submission import labels_to_strings

    # Hand-made: gallery rows 0..3 of individuals 0, 1, 1, 2; one query sees 3 (0.9), 1 (0.6), 0 (0.2).
    sims = np.array([[0.9, 0.6, 0.2, -1.0]], dtype=np.float32)
    rows = np.array([[3, 1, 0, -1]])
    labels, scores = top_candidates(sims, rows, np.array([0, 1, 1, 2]), fill=[1, 0, 2])
    assert labels.tolist() == [[2, 1, 0, NONE, NONE]]
    assert scores[0, :3].tolist() == pytest.approx([0.9, 0.6, 0.2]) and np.isneginf(scores[0, 3:]).all()
    vote_labels, _ = vote_candidates(sims, rows, np.array([0, 1, 1, 2]), fill=[1, 0, 2])
    assert vote_labels.tolist() == [[2, 1, 0, NONE, NONE]]
    pred = predict(labels, scores, 0.5)  # new_individual after the two known above 0.5
    assert pred.tolist() == [[2, 1, NEW, 0, NONE]]
    assert labels_to_strings(pred, ["a", "b", "c"]) == ["c b new_individual a"]


def test_out_of_fold_predictions_list_each_query_with_its_hit_rank_against_a_hand_made_case() -> None:
    from whaleid.retrieval.neighbours import Neighbours
    from whaleid.rule.mistakes import oof_predictions, per_species_map5
    from whaleid.rule.predict import Rule

    # Gallery rows 0..3 of classes 0, 1, 2, 3; class 4 ("e") has no gallery photo: a new individual.
    nn = Neighbours(
        sims=np.array([[0.9, 0.5, 0.4, 0.3], [0.6, 0.55, 0.2, 0.1], [0.3, 0.2, 0.1, 0.0]], dtype=np.float32),
        rows=np.array([[1, 0, 2, 3], [0, 1, 2, 3], [2, 3, 0, 1]]),
        gallery_labels=np.array([0, 1, 2, 3]),
        query_labels=np.array([1, 1, 4]),
        query_images=np.array(["q1.jpg", "q2.jpg", "q3.jpg"]),
    )
    oof = oof_predictions({"fold0": nn}, Rule(threshold=0.5), list("abcde"), {"q1.jpg": "orca", "q2.jpg": "orca"})
    assert oof["predictions"].tolist() == [
        "b a new_individual c d",  # 0.9, 0.5 >= 0.5, then new before 0.4
        "a b new_individual c d",
        "new_individual c d a b",
    ]
    assert oof["truth"].tolist() == ["b", "b", "new_individual"] and oof["in_gallery"].tolist() == [True, True, False]
    assert oof["hit_rank"].tolist() == [1, 2, 1] and oof["ap5"].tolist() == [1.0, 0.5, 1.0]
    assert oof["candidates"][0] == "b:0.9000 a:0.5000 c:0.4000 d:0.3000" and oof["species"][2] == ""
    assert per_species_map5(oof) == {"": {"map5": 1.0, "photos": 1}, "orca": {"map5": 0.75, "photos": 2}}
