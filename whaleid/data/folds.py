"""Label encoding and the stratified k-fold split.

Individuals with at least ``n_folds`` images are split with scikit-learn's ``StratifiedKFold`` (shuffled, seeded)
so that each appears in every fold. Individuals with fewer images than folds cannot be stratified: all their
images go to one fold, chosen at random (seeded) while balancing fold sizes. In that fold's validation they are
therefore *new individuals*, exactly like the ~16% unseen animals of the competition's test set.

When few individuals are rare (camera-trap, zoo and farm sets often have none), a fold's validation may hold almost
no new individuals, and the new_individual threshold cannot be calibrated on it. :func:`hold_out_new` then holds
whole individuals out of that fold's training (``cv.min_new_share``), recorded in folds.csv's ``holdout`` column (the folds a row's individual is held out of);
:func:`training_rows` is the one definition of what a fold model trains on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from whaleid.core.errors import DataError


def encode_labels(train: pd.DataFrame) -> dict[str, list[str]]:
    """Sorted class lists for individual_id and species (index = class number)."""
    return {
        "individual_id": np.unique(train["individual_id"].to_numpy()).tolist(),
        "species": np.unique(train["species"].to_numpy()).tolist(),
    }


def make_folds(train: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (0..n_folds-1) for every row of ``train``; a DataError if a fold would validate on nothing."""
    folds = _assign_folds(train, n_folds, seed)
    empty = np.flatnonzero(np.bincount(folds, minlength=n_folds) == 0)
    if len(empty):
        fits = next(
            (n for n in range(n_folds - 1, 1, -1) if np.bincount(_assign_folds(train, n, seed), minlength=n).all()),
            None,
        )
        raise DataError(
            f"cv.n_folds={n_folds} leaves fold {int(empty[0])} with no validation images: the {len(train)} "
            f"training images are {train['individual_id'].nunique()} individuals, and the images of an "
            f"individual with fewer than {n_folds} stay within one fold. Lower cv.n_folds"
            + (f" (at most {fits} here)." if fits else ".")
        )
    return folds


def _assign_folds(train: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    ids = train["individual_id"].to_numpy()
    counts = train["individual_id"].map(train["individual_id"].value_counts()).to_numpy()
    folds = np.full(len(train), -1, dtype=np.int64)
    frequent = np.flatnonzero(counts >= n_folds)
    if len(frequent):
        from sklearn.model_selection import StratifiedKFold  # here: the other stages need not import sklearn

        skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for fold, (_, valid_idx) in enumerate(skf.split(frequent, ids[frequent])):
            folds[frequent[valid_idx]] = fold
    rare = np.flatnonzero(counts < n_folds)
    if len(rare):
        rng = np.random.default_rng(seed)
        sizes = np.bincount(folds[folds >= 0], minlength=n_folds).astype(np.int64)
        groups = pd.Series(rare).groupby(ids[rare]).apply(list)
        order = rng.permutation(len(groups))
        for g in order:
            rows = groups.iloc[g]
            smallest = np.flatnonzero(sizes == sizes.min())
            fold = int(rng.choice(smallest))
            folds[rows] = fold
            sizes[fold] += len(rows)
    return folds


def natural_new(train: pd.DataFrame, folds: np.ndarray) -> np.ndarray:
    """(N,) True where a row's individual has no image outside the row's fold: new in that fold's validation."""
    frame = pd.DataFrame({"id": train["individual_id"].to_numpy(), "fold": folds})
    n_folds_seen = frame.groupby("id")["fold"].transform("nunique").to_numpy()
    return n_folds_seen == 1


def _stratified_order(
    candidates: list[str], species: pd.Series, counts: pd.Series, rng: np.random.Generator
) -> list[str]:
    """``candidates`` in draw order: shuffled within strata (species, image count as a power of two), the next one
    always from the stratum least drawn so far relative to its size."""
    strata: dict[tuple[str, int], list[str]] = {}
    for c in (candidates[i] for i in rng.permutation(len(candidates))):
        strata.setdefault((species[c], int(np.log2(counts[c]))), []).append(c)
    drawn = dict.fromkeys(sorted(strata), 0)
    order = []
    while len(order) < len(candidates):
        key = min((k for k in drawn if drawn[k] < len(strata[k])), key=lambda k: (drawn[k] / len(strata[k]), k))
        order.append(strata[key][drawn[key]])
        drawn[key] += 1
    return order


def hold_out_new(train: pd.DataFrame, folds: np.ndarray, n_folds: int, min_share: float, seed: int) -> np.ndarray:
    """For each fold whose validation has fewer than ``min_share`` images of new individuals, choose whole
    individuals to hold out of that fold's training (their images in that fold become new validation queries)
    until it has ``min_share``. Returns ``held`` (N, n_folds) bool: row i's individual is held out of fold f.

    Candidates are individuals seen in several folds, drawn deterministically (``seed``) and stratified by species
    and by image count (:func:`_stratified_order`), so the held-out set has the data's mix of species and of rare
    and frequent animals. Individuals not yet held out of another fold come first. They stay in every other fold's
    training and in the submission's gallery: they are new for CV only.
    """
    ids = train["individual_id"].to_numpy()
    held = np.zeros((len(train), n_folds), dtype=bool)
    if min_share <= 0:
        return held
    new = natural_new(train, folds)
    counts = train["individual_id"].value_counts()
    species = train.groupby("individual_id")["species"].agg(lambda s: s.mode().iloc[0])
    used: set[str] = set()
    for fold in range(n_folds):
        in_fold = folds == fold
        need = int(np.ceil(min_share * in_fold.sum())) - int(new[in_fold].sum())
        if need <= 0:
            continue
        per_id = pd.Series(ids[in_fold & ~new]).value_counts()
        rng = np.random.default_rng([seed, 1, fold])
        fresh = sorted(c for c in per_id.index if c not in used)
        again = sorted(c for c in per_id.index if c in used)
        for chosen in _stratified_order(fresh, species, counts, rng) + _stratified_order(again, species, counts, rng):
            if need <= 0:
                break
            used.add(chosen)
            held[ids == chosen, fold] = True
            need -= int(per_id[chosen])
    return held


def encode_held(held: np.ndarray) -> list[str]:
    """folds.csv's ``holdout`` column: the folds each row's individual is held out of, space-separated."""
    return [" ".join(str(f) for f in np.flatnonzero(row)) for row in held]


def decode_held(column: pd.Series | list[str], n_folds: int) -> np.ndarray:
    """The inverse of :func:`encode_held`: (N, n_folds) bool."""
    held = np.zeros((len(column), n_folds), dtype=bool)
    for i, text in enumerate(column):
        for f in str(text).split():
            held[i, int(f)] = True
    return held


def training_rows(folds: np.ndarray, held: np.ndarray, fold: int | None) -> np.ndarray:
    """(N,) mask of the rows model ``fold`` trains on (and its CV gallery): every other fold, less the individuals
    held out of ``fold`` (``held``: (N, n_folds) bool); every row for ``fold=None`` (the full fit)."""
    folds = np.asarray(folds)
    if fold is None:
        return np.ones(len(folds), dtype=bool)
    return (folds != fold) & ~np.asarray(held)[:, fold]


def new_shares(train: pd.DataFrame, folds: np.ndarray, held: np.ndarray, n_folds: int) -> pd.DataFrame:
    """Per fold: validation images, the share of them showing individuals absent from that fold's training
    without (``natural``) and with the held-out individuals (``total``), and how many individuals were held out."""
    ids = train["individual_id"].to_numpy()
    rows = []
    for fold in range(n_folds):
        valid = folds == fold
        seen = set(ids[training_rows(folds, held, fold)])
        natural_seen = set(ids[folds != fold])
        n = int(valid.sum())
        rows.append(
            {
                "fold": fold,
                "valid_images": n,
                "natural": float(np.mean([i not in natural_seen for i in ids[valid]])) if n else 0.0,
                "total": float(np.mean([i not in seen for i in ids[valid]])) if n else 0.0,
                "held_out_individuals": int(len(set(ids[held[:, fold]]))),
            }
        )
    return pd.DataFrame(rows)
