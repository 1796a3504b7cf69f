"""Label encoding and the stratified split with deliberate handling of rare individuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from whaleid.core.errors import DataError
from whaleid.data.folds import encode_labels, make_folds


def frame(counts: dict[str, int]) -> pd.DataFrame:
    ids = [i for i, c in counts.items() for _ in range(c)]
    return pd.DataFrame({"image": [f"{k}.jpg" for k in range(len(ids))], "species": "s", "individual_id": ids})


def test_frequent_individuals_in_every_fold_rare_in_one() -> None:
    counts = {f"f{i}": 5 + i for i in range(20)} | {f"r{i}": 1 + i % 4 for i in range(60)}
    train = frame(counts)
    folds = make_folds(train, n_folds=5, seed=0)
    assert set(folds) == set(range(5))
    per = pd.Series(folds).groupby(train["individual_id"]).agg(lambda s: set(s))
    for ind, n in counts.items():
        if n >= 5:
            assert per[ind] == set(range(5)), ind
        else:
            assert len(per[ind]) == 1, ind  # all images of a rare individual share a fold -> "new" there
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 4


def test_split_is_deterministic_and_seeded() -> None:
    train = frame({f"f{i}": 3 + i % 7 for i in range(50)})
    assert (make_folds(train, 4, 1) == make_folds(train, 4, 1)).all()
    assert (make_folds(train, 4, 1) != make_folds(train, 4, 2)).any()


def test_encode_labels_sorted_json_friendly() -> None:
    enc = encode_labels(pd.DataFrame({"individual_id": ["b", "a", "b"], "species": ["x", "y", "x"]}))
    assert enc == {"individual_id": ["a", "b"], "species": ["x", "y"]}


def test_folds_and_labels_disagreeing_is_a_clear_error(tmp_path, monkeypatch) -> None:
    import json

    import pytest

    from whaleid.core.errors import DataError
    from whaleid.pipeline.artifacts import folds_with_labels

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/prepared").mkdir(parents=True)
    frame({"a": 2, "b": 1}).assign(fold=[0, 1, 0], holdout="").to_csv("data/prepared/folds.csv", index=False)
    (tmp_path / "data/prepared/labels.json").write_text(json.dumps({"individual_id": ["a"], "species": ["s"]}))
    with pytest.raises(DataError, match=r"disagree \(e\.g\. 'b'\).*dvc repro split"):
        folds_with_labels()
    (tmp_path / "data/prepared/labels.json").write_text(json.dumps({"individual_id": ["a", "b"], "species": ["s"]}))
    folds, classes = folds_with_labels()
    assert folds["label"].tolist() == [0, 0, 1] and classes == ["a", "b"]


def _brute_new_share(train: pd.DataFrame, folds: np.ndarray, holdout: np.ndarray, fold: int) -> float:
    """Share of fold ``fold``'s validation images whose individual is nowhere in that fold's training rows."""
    ids = train["individual_id"].tolist()
    trained_on = {ids[i] for i in range(len(ids)) if folds[i] != fold and holdout[i] != fold}
    valid = [ids[i] for i in range(len(ids)) if folds[i] == fold]
    return sum(i not in trained_on for i in valid) / len(valid)


def test_no_rare_individuals_get_new_individuals_held_out_in_every_fold() -> None:
    from whaleid.data.folds import decode_held, encode_held, hold_out_new, new_shares, training_rows

    rng = np.random.default_rng(0)
    counts = {f"i{k}": int(c) for k, c in enumerate(rng.integers(6, 30, size=60))}  # nobody rarer than the folds
    train = frame(counts)
    train["species"] = [f"sp{int(i[1:]) % 3}" for i in train["individual_id"]]
    folds = make_folds(train, 5, seed=1)
    none = np.full(len(train), -1)
    assert all(_brute_new_share(train, folds, none, f) == 0 for f in range(5))  # the natural split has no new
    held = hold_out_new(train, folds, 5, min_share=0.2, seed=1)
    assert (decode_held(encode_held(held), 5) == held).all()  # folds.csv round trip
    shares = new_shares(train, folds, held, 5)
    ids = train["individual_id"]
    for f in range(5):
        per_row = [f in {g for g in range(5) if held[i, g]} for i in range(len(train))]
        got = _brute_new_share(train, folds, np.array([f if x else -1 for x in per_row]), f)
        assert 0.2 <= got < 0.2 + 30 / (folds == f).sum()  # reached, overshooting by less than one individual
        assert shares.loc[f, "total"] == pytest.approx(got) and shares.loc[f, "natural"] == 0
        out = set(ids[held[:, f]])
        assert out and all(held[ids == i, f].all() for i in out)  # whole individuals
        rows = training_rows(folds, held, f)
        assert not set(ids[rows]) & out and (folds[rows] != f).all()
        assert set(ids[rows]) | out == set(ids[folds != f])  # nothing else left out
    # Fresh individuals first: most are held out of one fold only.
    assert (held.sum(axis=1)[held.any(axis=1)] == 1).mean() > 0.5
    # Stratified by species: every species is among the held-out individuals.
    assert set(train["species"][held.any(axis=1)]) == {"sp0", "sp1", "sp2"}
    assert (hold_out_new(train, folds, 5, 0.2, seed=1) == held).all()  # deterministic
    assert not hold_out_new(train, folds, 5, 0.0, seed=1).any()  # switched off


def test_natural_new_individuals_are_not_held_out_again() -> None:
    from whaleid.data.folds import hold_out_new

    train = frame({f"r{i}": 1 for i in range(40)} | {f"f{i}": 8 for i in range(10)})  # 50% rare
    folds = make_folds(train, 4, seed=0)
    assert not hold_out_new(train, folds, 4, min_share=0.16, seed=0).any()  # every fold is new enough already


def test_a_fold_left_without_validation_images_is_refused_naming_a_count_that_works() -> None:
    """5 individuals of 2 images: each stays within one fold (fewer images than folds), so 6 folds leave one empty
    (the ensemble stage used to crash on it after training); 5 folds fill every fold."""
    train = frame({f"i{k}": 2 for k in range(5)})
    with pytest.raises(DataError, match=r"cv.n_folds=6 leaves fold [0-5] with no validation images.*at most 5 here"):
        make_folds(train, n_folds=6, seed=0)
    assert set(make_folds(train, n_folds=5, seed=0)) == set(range(5))
