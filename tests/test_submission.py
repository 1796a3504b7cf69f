"""Submission building, validation and scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from whaleid.core.errors import SubmissionError
from whaleid.rule.predict import NEW
from whaleid.rule.submission import build_submission, labels_to_strings, score_submission, validate_submission

CLASSES = ["aaa", "bbb", "ccc", "ddd", "eee", "fff"]
IMAGES = ["1.jpg", "2.jpg"]


def good() -> pd.DataFrame:
    pred = np.array([[0, 1, NEW, 2, 3], [NEW, 5, 4, 3, 2]])
    return build_submission(IMAGES, labels_to_strings(pred, CLASSES))


def test_labels_to_strings() -> None:
    frame = good()
    assert frame["predictions"].tolist() == ["aaa bbb new_individual ccc ddd", "new_individual fff eee ddd ccc"]
    validate_submission(frame, IMAGES, CLASSES)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.rename(columns={"predictions": "pred"}), "header must be image,predictions"),
        (lambda f: f.iloc[:1], "1 rows for 2 test images"),
        (lambda f: f.assign(image=["1.jpg", "1.jpg"]), "row 3: image '1.jpg' appears twice"),
        (lambda f: f.iloc[::-1].reset_index(drop=True), "row 2: image '2.jpg' where sample_submission has '1.jpg'"),
        (lambda f: f.assign(predictions=["aaa bbb ccc ddd", f.predictions[1]]), "row 2 .*4 predictions"),
        (lambda f: f.assign(predictions=["aaa aaa ccc ddd eee", f.predictions[1]]), "row 2 .*duplicate predictions"),
        (
            lambda f: f.assign(predictions=[f.predictions[0], "zzz bbb ccc ddd eee"]),
            "row 3 .*unknown individual_id 'zzz'",
        ),
    ],
)
def test_validation_errors(mutate, message: str) -> None:
    with pytest.raises(SubmissionError, match=message):
        validate_submission(mutate(good()), IMAGES, CLASSES)


def test_score_against_solution() -> None:
    solution = pd.DataFrame({"image": IMAGES, "individual_id": ["ccc", "new_individual"]})
    assert score_submission(good(), solution) == pytest.approx((1 / 4 + 1) / 2)


def test_the_new_individual_share_is_warned_when_off_new_ratio_by_more_than_twice_naming_the_cause() -> None:
    from whaleid.rule.submission import new_share_warning, run_summary

    assert new_share_warning(0.30, 0.20, 0.16) is None  # within a factor of two
    assert new_share_warning(None, 0.5, 0.16) is None
    both = new_share_warning(0.685, 0.62, 0.16)
    assert both.startswith("new_individual is first for 68.5% of the test photos where cv.new_ratio expects 16%")
    assert "validation too (62.0%)" in both and "tells these individuals apart poorly" in both
    test_only = new_share_warning(0.05, 0.15, 0.16)  # too few new on test, validation fine: test differs
    assert "validation is near it (15.0%)" in test_only and "test photos score lower" not in both
    line = run_summary({"map5": 0.4, "valid_new_first_share": 0.62}, 0.3, 0.685, 0.16)
    assert "new_individual first: validation 62.0%, test 68.5% (cv.new_ratio 16%)" in line
