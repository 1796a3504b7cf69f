"""Label encoding and the stratified split with deliberate handling of rare individuals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from whaleid.folds import encode_labels, make_folds


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

    from whaleid.artifacts import folds_with_labels
    from whaleid.data import DataError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/prepared").mkdir(parents=True)
    frame({"a": 2, "b": 1}).assign(fold=[0, 1, 0]).to_csv("data/prepared/folds.csv", index=False)
    (tmp_path / "data/prepared/labels.json").write_text(json.dumps({"individual_id": ["a"], "species": ["s"]}))
    with pytest.raises(DataError, match=r"disagree \(e\.g\. 'b'\).*dvc repro split"):
        folds_with_labels()
    (tmp_path / "data/prepared/labels.json").write_text(json.dumps({"individual_id": ["a", "b"], "species": ["s"]}))
    folds, classes = folds_with_labels()
    assert folds["label"].tolist() == [0, 0, 1] and classes == ["a", "b"]
