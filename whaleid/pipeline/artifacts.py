"""Reading the pipeline's own intermediate artifacts: the fold assignment with class numbers, the resized images
and the class -> species table. (The user's dataset is read by :mod:`whaleid.data.layout`.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from whaleid.config import Params, member_fold, to_dict
from whaleid.core.atomic import read_json
from whaleid.core.errors import DataError
from whaleid.data.boxes import Box, read_boxes
from whaleid.data.folds import decode_held
from whaleid.data.resize import resized_name
from whaleid.pipeline.paths import DETECT_DIR, FOLDS, LABELS, QUERY_BOXES, RESIZED_DIR


def held_out(folds: pd.DataFrame) -> np.ndarray:
    """(N, n_folds) bool from folds.csv's ``holdout`` column: row i's individual is held out of fold f's training."""
    return decode_held(folds["holdout"], int(folds["fold"].max()) + 1)


def folds_with_labels(folds_path: Path = FOLDS, labels_path: Path = LABELS) -> tuple[pd.DataFrame, list[str]]:
    """folds.csv with ``label`` and ``species_label`` columns (class numbers from labels.json), and the class
    list of individual_id."""
    folds = pd.read_csv(
        folds_path,
        dtype={"image": str, "individual_id": str, "species": str, "fold": int, "holdout": str},
        keep_default_na=False,
    )
    if "holdout" not in folds.columns:
        raise DataError(f"{folds_path} predates held-out individuals (no holdout column); rerun `dvc repro split`")
    encoded = read_json(labels_path)
    classes = encoded["individual_id"]
    index = {c: i for i, c in enumerate(classes)}
    labels = folds["individual_id"].map(index)
    if labels.isna().any():
        raise DataError(
            f"{folds_path} and {labels_path} disagree (e.g. "
            f"{folds['individual_id'][labels.isna()].iloc[0]!r}); rerun `dvc repro split`"
        )
    folds["label"] = labels.astype(np.int64)
    folds["species_label"] = folds["species"].map({s: i for i, s in enumerate(encoded["species"])})
    if folds["species_label"].isna().any():
        raise DataError(f"{folds_path} has a species missing from {labels_path}; rerun `dvc repro split`")
    folds["species_label"] = folds["species_label"].astype(np.int64)
    return folds, classes


def resized_paths(split: str, names: pd.Series | list[str], fmt: str) -> list[Path]:
    """Paths of the resized copies (stage `resize`) of images ``names`` in ``split`` (train_images/test_images),
    stored as ``fmt`` (``resize.format``, which :func:`check_resized` has checked against info.json)."""
    return [RESIZED_DIR / split / resized_name(n, fmt) for n in names]


def check_resized(params: Params) -> None:
    """Raise a DataError unless data/resized was made for ``params`` (image size and crop)."""
    info_path = RESIZED_DIR / "info.json"
    if not info_path.is_file():
        raise DataError(f"{info_path} not found; run the resize stage first: `dvc repro resize`.")
    info = read_json(info_path)
    want = {"img_size": params.model.img_size, "crop": to_dict(params.crop), "resize": to_dict(params.resize)}
    have = {"img_size": info.get("img_size"), "crop": info.get("crop"), "resize": info.get("resize")}
    if have != want:
        raise DataError(f"{RESIZED_DIR} was made for {have}, but params ask for {want}; run `dvc repro resize`.")


def class_species(folds: pd.DataFrame, n_classes: int) -> np.ndarray:
    """(n_classes,) species name of every class (its most frequent species, ties by name), from folds with
    ``label`` and ``species`` columns; "" for a class without rows."""
    out = np.full(n_classes, "", dtype=object)
    counts = folds.groupby(["label", "species"]).size().reset_index(name="n")
    counts = counts.sort_values(["label", "n", "species"], ascending=[True, False, True])
    first = counts.drop_duplicates("label")
    out[first["label"].to_numpy()] = first["species"].to_numpy()
    return out


def submission_models(params: Params) -> list[str]:
    """The models whose embeddings the submission combines: the ``fold`` model (unless
    ``ensemble.fold_model: false``), then ``ensemble.members``."""
    main = [f"fold{params.fold}"] if params.ensemble.fold_model else []
    return main + list(params.ensemble.members)


def cv_models(params: Params) -> dict[str, int]:
    """The fold models CV is computed from (name -> validation fold): the ``fold`` model and every foldN member.
    With several, CV is out of fold over all their validation folds."""
    out = {f"fold{params.fold}": params.fold}
    for name in params.ensemble.members:
        fold = member_fold(name)
        if fold is not None:
            out[name] = fold
    return out


def stage_boxes() -> dict[str, Box] | None:
    """The boxes the pipeline crops to, as stage ``detect`` settled them (the CSV's, the detector's, or none)."""
    path = DETECT_DIR / "boxes.csv"
    return read_boxes(path) if path.is_file() else None


def query_boxes() -> dict[str, Box] | None:
    """The detector's boxes of the train photos that validation queries are cropped to (``detect.valid_crops:
    predicted``), or None: validation queries are then the photos the gallery holds."""
    return read_boxes(QUERY_BOXES) if QUERY_BOXES.is_file() else None
