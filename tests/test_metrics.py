"""MAP@5 against hand-computed cases."""

import pytest

from whaleid.metrics import map_at_5, precision_at_5


def test_hand_computed_cases() -> None:
    preds = [
        ["a", "b", "c", "d", "e"],  # truth a: rank 1 -> 1
        ["b", "a", "c", "d", "e"],  # truth a: rank 2 -> 1/2
        ["x", "y", "z", "w", "a"],  # truth a: rank 5 -> 1/5
        ["x", "y", "z", "w", "v"],  # truth a: absent -> 0
    ]
    assert map_at_5(preds, ["a"] * 4) == pytest.approx((1 + 0.5 + 0.2 + 0) / 4)


def test_only_first_five_and_first_occurrence_count() -> None:
    assert precision_at_5(["q", "w", "e", "r", "t", "a"], "a") == 0.0
    assert precision_at_5(["q", "a", "a", "r", "t"], "a") == 0.5
    assert precision_at_5(["new_individual", "k", "l", "m", "n"], "new_individual") == 1.0


def test_errors() -> None:
    with pytest.raises(ValueError):
        map_at_5([["a"]], ["a", "b"])
    with pytest.raises(ValueError):
        map_at_5([], [])
