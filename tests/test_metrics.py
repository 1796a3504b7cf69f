"""MAP@5 against hand-computed cases."""

import numpy as np
import pytest

from whaleid.core.errors import ConfigError
from whaleid.rule.metrics import map_at_5, precision_at_5


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


def _subset_reference(gallery: list[int], query: list[int], max_images: int, seed: int) -> tuple[list, list]:
    """Individuals one by one in the seeded order, each kept if its photos still fit in what is left."""
    ids = sorted(set(gallery) | set(query))
    order = np.random.default_rng(seed).permutation(len(ids))
    kept, total = set(), 0
    for i in order:
        n = gallery.count(ids[i]) + query.count(ids[i])
        if total + n <= max_images:
            kept.add(ids[i])
            total += n
    return [r for r, g in enumerate(gallery) if g in kept], [r for r, q in enumerate(query) if q in kept]


@pytest.mark.parametrize(("max_images", "seed"), [(0, 0), (10, 1), (25, 2), (40, 3), (1000, 4)])
def test_eval_subset_keeps_whole_individuals_within_the_budget(max_images: int, seed: int) -> None:
    from whaleid.rule.evaluate import eval_subset

    rng = np.random.default_rng(seed)
    gallery = rng.integers(0, 12, 40).tolist()
    query = rng.integers(0, 16, 15).tolist()  # 12-15: seen only among the queries (new individuals)
    g_rows, q_rows = eval_subset(np.array(gallery), np.array(query), max_images, seed)
    if max_images == 0 or max_images >= len(gallery) + len(query):
        assert g_rows.tolist() == list(range(40)) and q_rows.tolist() == list(range(15))
        return
    want_g, want_q = _subset_reference(gallery, query, max_images, seed)
    assert (g_rows.tolist(), q_rows.tolist()) == (want_g, want_q)
    assert 0 < len(g_rows) + len(q_rows) <= max_images
    with pytest.raises(ConfigError, match=r"train.eval_images 1 is fewer than the photos of any one individual"):
        eval_subset(np.array([0, 0, 1, 1]), np.array([0, 1]), 1)
    again = eval_subset(np.array(gallery), np.array(query), max_images, seed)  # the same rows every epoch
    assert [g_rows.tolist(), q_rows.tolist()] == [r.tolist() for r in again]
