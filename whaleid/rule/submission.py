"""Kaggle submission: ``image,predictions`` with five distinct space-separated ids per test image.

``validate_submission`` checks, before anything is written: the header, every expected image exactly once in the
expected order, exactly five distinct tokens per row, and that each token is a known individual_id or
new_individual.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from whaleid.core.errors import SubmissionError
from whaleid.data.layout import NEW_INDIVIDUAL
from whaleid.rule.candidates import NONE
from whaleid.rule.metrics import map_at_5
from whaleid.rule.predict import NEW

__all__ = ["SubmissionError", "labels_to_strings", "build_submission", "validate_submission", "score_submission"]


def labels_to_strings(pred: np.ndarray, classes: Sequence[str]) -> list[str]:
    """Turn (Q, 5) class numbers (:data:`NEW` for new_individual) into space-separated strings; :data:`NONE`
    slots (a gallery of fewer than five individuals) are left out."""
    names = np.asarray([*classes, NEW_INDIVIDUAL, ""], dtype=object)
    idx = np.where(pred == NEW, len(classes), np.where(pred == NONE, len(classes) + 1, pred))
    return [" ".join(name for name in row if name) for row in names[idx]]


def build_submission(images: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"image": list(images), "predictions": list(predictions)})


def validate_submission(frame: pd.DataFrame, expected_images: Sequence[str], known_ids: Iterable[str]) -> None:
    """Raise :class:`SubmissionError` describing the first problem found."""
    if list(frame.columns) != ["image", "predictions"]:
        raise SubmissionError(f"header must be image,predictions; got {','.join(map(str, frame.columns))}")
    images = frame["image"].tolist()
    if len(images) != len(expected_images):
        raise SubmissionError(f"{len(images)} rows for {len(expected_images)} test images")
    dup = frame["image"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise SubmissionError(f"row {row + 2}: image {images[row]!r} appears twice")
    for row, (got, want) in enumerate(zip(images, expected_images, strict=True)):
        if got != want:
            raise SubmissionError(f"row {row + 2}: image {got!r} where sample_submission has {want!r}")
    allowed = set(known_ids) | {NEW_INDIVIDUAL}
    for row, text in enumerate(frame["predictions"].tolist()):
        tokens = str(text).split(" ")
        if len(tokens) != 5:
            raise SubmissionError(f"row {row + 2} ({images[row]}): {len(tokens)} predictions, need exactly 5: {text!r}")
        if len(set(tokens)) != 5:
            raise SubmissionError(f"row {row + 2} ({images[row]}): duplicate predictions in {text!r}")
        unknown = [t for t in tokens if t not in allowed]
        if unknown:
            raise SubmissionError(f"row {row + 2} ({images[row]}): unknown individual_id {unknown[0]!r}")


def score_submission(frame: pd.DataFrame, solution: pd.DataFrame) -> float:
    """MAP@5 of a submission against an answer key (image,individual_id)."""
    truth = dict(zip(solution["image"], solution["individual_id"], strict=True))
    missing = [i for i in frame["image"] if i not in truth]
    if missing:
        raise SubmissionError(f"no answer for image {missing[0]!r} ({len(missing)} in all)")
    return map_at_5([p.split(" ") for p in frame["predictions"]], [truth[i] for i in frame["image"]])


def solution_labels(solution: pd.DataFrame, images: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """(Q,) class number of the answer for each of ``images`` (:data:`NEW` for new_individual or an id absent
    from ``classes``)."""
    index = {c: i for i, c in enumerate(classes)}
    truth = dict(zip(solution["image"], solution["individual_id"], strict=True))
    return np.array([index.get(truth[i], NEW) for i in images], dtype=np.int64)


def cv_line(m: dict, pooled: bool = False) -> str:
    """What stage threshold logs: CV MAP@5 at the fitted threshold, known and new, the share of validation that is
    new, and (``pooled``: several validation folds) the per-fold spread and per-species thresholds."""
    line = (
        f"CV MAP@5 {m['map5']:.4f} at threshold {m['threshold']:.3f} ({m['method']}; known {m['map5_known']:.4f}, "
        f"new {m['map5_new']}; {100 * m['valid_new_share']:.1f}% of validation is new)"
    )
    if pooled:
        line += f"; out of fold over {', '.join(m['folds'])}: per fold {m['folds_mean']:.4f} ± {m['folds_std']:.4f}"
    if m.get("species_thresholds"):
        line += f"; per species: {m['species_thresholds']}"
    return line


def new_share_warning(test_share: float | None, valid_share: float | None, new_ratio: float) -> str | None:
    """A warning when the test photos given new_individual first are off ``new_ratio`` (the share of new
    individuals expected, ``cv.new_ratio``) by more than a factor of two, naming the likely cause; else None."""
    if test_share is None or new_ratio <= 0 or 0.5 <= test_share / new_ratio <= 2:
        return None
    said = f"new_individual is first for {100 * test_share:.1f}% of the test photos where cv.new_ratio expects {100 * new_ratio:.0f}%"
    if valid_share is not None and not 0.5 <= valid_share / new_ratio <= 2:
        why = (
            f"validation too ({100 * valid_share:.1f}%): the model tells these individuals apart poorly, so the "
            "best threshold calls most photos new (metrics/oof_predictions.csv lists the misses)"
        )
    else:
        why = (
            f"validation is near it ({100 * (valid_share or 0):.1f}%): test photos score lower than validation's, "
            "so they differ from the training photos (other crops, light or cameras; with a detector, check its "
            "boxes of the test photos)"
        )
    return f"{said}; {why}."


def run_summary(cv: dict, lb: float | None, test_new_share: float | None = None, new_ratio: float | None = None) -> str:
    """The run in one line: ``cv`` is metrics/cv.json, ``lb`` the LB MAP@5 or None (no solution.csv); with
    ``test_new_share``, the shares of validation and test photos given new_individual first."""

    def num(key: str) -> str:
        return "n/a" if cv.get(key) is None else f"{cv[key]:.4f}"

    folds = ", ".join(cv.get("folds", {})) or "?"
    line = (
        f"summary: CV MAP@5 {num('map5')} (known {num('map5_known')}, new {num('map5_new')}; "
        f"validation {folds}, threshold {cv.get('threshold')})"
    )
    line += f" | LB MAP@5 {lb:.4f}" if lb is not None else " | no local LB (no solution.csv)"
    if test_new_share is not None:
        valid = cv.get("valid_new_first_share")
        line += (
            f" | new_individual first: validation {'n/a' if valid is None else f'{100 * valid:.1f}%'}, "
            f"test {100 * test_new_share:.1f}%" + (f" (cv.new_ratio {100 * new_ratio:.0f}%)" if new_ratio else "")
        )
    return line + " | submissions/submission.csv | compare experiments: whaleid exps"
