"""Pseudo-label selection (whaleid.pipeline.pseudo): a hand-computed case, and the leakage guard: no pseudo-label may come
from the validation fold a round's CV is computed on."""

import numpy as np
import pandas as pd

from whaleid.config import params_from_dict
from whaleid.pipeline.pseudo import evaluate_model, pseudo_labels, select_confident
from whaleid.retrieval.blend import Centres
from whaleid.rule.predict import NEW


def test_select_confident_hand_computed():
    first = np.array([3, NEW, 1, 7, 2, 4])
    labels = np.array(
        [[3, 1, 2, 4, 5], [0, 1, 2, 3, 4], [1, 0, 2, 3, 4], [7, 2, 1, 0, 3], [2, 9, 8, 7, 6], [4, 3, 2, 1, 0]]
    )
    scores = np.array(
        [
            [0.9, 0.5, 0, 0, 0],
            [0.99, 0.1, 0, 0, 0],
            [0.8, 0.79, 0, 0, 0],
            [0.95, 0.2, 0, 0, 0],
            [0.7, -np.inf, -np.inf, -np.inf, -np.inf],
            [0.6, 0.1, 0, 0, 0],
        ]
    )
    # Row 1 is new_individual first: never chosen, however high its score. The rest by top-1 score: 3, 0, 2, 4, 5.
    np.testing.assert_array_equal(select_confident(first, labels, scores, max_share=1.0), [3, 0, 2, 4, 5])
    np.testing.assert_array_equal(select_confident(first, labels, scores, max_share=0.5), [3, 0, 2])  # floor(3.0)
    # A margin of 0.05 drops row 2 (0.80 vs 0.79); row 4 has no second candidate, so its margin is infinite.
    np.testing.assert_array_equal(select_confident(first, labels, scores, 1.0, min_margin=0.05), [3, 0, 4, 5])


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_no_pseudo_label_comes_from_the_validation_fold():
    """Individual 9 is seen only in fold 0, the validation fold. A test photo identical to its photo would be
    labelled 9 if the selection searched the whole training set; it must not be (9 is not in fold 0's training
    gallery), while a test photo identical to a training-fold photo is labelled with that individual."""
    rng = np.random.default_rng(0)
    n, d, n_classes = 60, 16, 10
    labels = np.arange(n) % 9  # individuals 0..8, each in several folds
    folds = np.arange(n) % 3
    labels[folds == 0] = np.where(np.arange((folds == 0).sum()) == 0, 9, labels[folds == 0])  # one photo of 9
    centre = unit(rng.normal(size=(n_classes, d)))
    emb = unit(centre[labels] + 0.05 * rng.normal(size=(n, d)))
    photo9 = np.flatnonzero(labels == 9)[0]
    photo_known = np.flatnonzero((folds == 1) & (labels == 4))[0]
    test_emb = unit(np.stack([emb[photo9], emb[photo_known]]))
    train = {
        "embeddings": emb,
        "images": np.array([f"t{i}.jpg" for i in range(n)]),
        "labels": labels,
        "folds": folds,
        "held": np.zeros((n, 3), dtype=bool),
    }
    test = {"embeddings": test_emb, "images": np.array(["q9.jpg", "q4.jpg"]), "labels": np.full(2, -1)}
    params = params_from_dict(
        {
            "local": {"method": "none"},
            "pseudo": {"rounds": 1, "max_share": 1.0},
            "threshold": {"start": -1.0, "stop": 1.0, "step": 0.1},
        }
    )
    trained = np.bincount(labels[folds != 0], minlength=n_classes) > 0
    classes = [f"id{c}" for c in range(n_classes)]
    species = np.array(["s"] * n_classes, dtype=object)
    centres = Centres(centre, 1, trained)
    ev = evaluate_model(
        params,
        "fold0",
        0,
        train=train,
        test=test,
        centres=centres,
        keypoints=None,
        class_species=species,
        classes=classes,
        solution=None,
    )
    own = set(train["images"][folds != 0])
    assert set(ev.select.gallery_images) == own and set(ev.valid.gallery_images) == own
    assert set(ev.test.gallery_images) == set(train["images"])  # the submission searches every training photo
    chosen = pseudo_labels(ev, params, species)
    assert 9 not in set(chosen["label"]), chosen
    assert pd.Series(chosen["label"].to_numpy(), index=chosen["image"]).get("q4.jpg") == 4, chosen
