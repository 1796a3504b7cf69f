"""Label encoding and the stratified k-fold split.

Individuals with at least ``n_folds`` images are split with scikit-learn's ``StratifiedKFold`` (shuffled, seeded)
so that each appears in every fold. Individuals with fewer images than folds cannot be stratified: all their
images go to one fold, chosen at random (seeded) while balancing fold sizes. In that fold's validation they are
therefore *new individuals*, exactly like the ~16% unseen animals of the competition's test set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import LabelEncoder


def encode_labels(train: pd.DataFrame) -> dict[str, list[str]]:
    """Sorted class lists for individual_id and species (index = class number)."""
    return {
        "individual_id": LabelEncoder().fit(train["individual_id"]).classes_.tolist(),
        "species": LabelEncoder().fit(train["species"]).classes_.tolist(),
    }


def make_folds(train: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (0..n_folds-1) for every row of ``train``."""
    ids = train["individual_id"].to_numpy()
    counts = train["individual_id"].map(train["individual_id"].value_counts()).to_numpy()
    folds = np.full(len(train), -1, dtype=np.int64)
    frequent = np.flatnonzero(counts >= n_folds)
    if len(frequent):
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
