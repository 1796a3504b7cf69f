"""Small helpers shared by the stages that read the fold assignment."""

import numpy as np
import pandas as pd

from whaleid.data import DataError
from whaleid.io import read_json
from whaleid.paths import FOLDS, LABELS


def folds_with_labels() -> tuple[pd.DataFrame, list[str]]:
    """folds.csv with a ``label`` column (class number from labels.json), and the class list."""
    folds = pd.read_csv(FOLDS, dtype={"image": str, "individual_id": str, "species": str, "fold": int},
                        keep_default_na=False)  # fmt: skip
    classes = read_json(LABELS)["individual_id"]
    index = {c: i for i, c in enumerate(classes)}
    labels = folds["individual_id"].map(index)
    if labels.isna().any():
        raise DataError(f"{FOLDS} and {LABELS} disagree (e.g. {folds['individual_id'][labels.isna()].iloc[0]!r}); "
                        "rerun the encode and split stages: `dvc repro split`")  # fmt: skip
    folds["label"] = labels.astype(np.int64)
    return folds, classes
