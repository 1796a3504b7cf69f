"""Reading and validating a dataset in the Kaggle layout, image decoding and the torch ``Dataset``.

Layout (``load_dataset``)::

    train.csv  sample_submission.csv  [solution.csv]  [boxes.csv]  [solution_boxes.csv]  train_images/  test_images/

Validation raises :class:`DataError` naming the file and CSV line for: a missing file, folder or column, an
empty or unparsable CSV, empty cells, duplicate image rows, an image listed but absent, an image name that
escapes its folder, an empty ``test_images/``, a ``sample_submission.csv`` that disagrees with
``test_images/``, and ids or species with whitespace, the reserved ``new_individual`` or case-only differences. ``check_images`` decodes every file and names unreadable or truncated ones.

``read_image`` returns RGB uint8 whatever the file holds: grayscale, RGBA, CMYK and 16-bit images are converted,
and EXIF orientation is applied.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whaleid.core.errors import DataError
from whaleid.data.images import file_kind

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ("image", "species", "individual_id")
SUBMISSION_COLUMNS = ("image", "predictions")
SOLUTION_COLUMNS = ("image", "individual_id")
NEW_INDIVIDUAL = "new_individual"
SOLUTION_BOXES = "solution_boxes.csv"  # optional answer key: the test photos' true boxes (scores stage detect only)


def read_csv(path: Path, columns: Sequence[str], optional: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV as strings and check it has ``columns``, rows, no empty cells and no duplicate images; the
    ``optional`` columns are kept where the file has them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Expected the Kaggle layout with columns {','.join(columns)}.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")  # a BOM (Excel) is fine
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected a header {','.join(columns)} and rows.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())  # pandas' messages may end in a line break
        raise DataError(f"{path}: not a valid UTF-8 CSV file: {reason}") from None
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 1))
        if fh.read(1) not in (b"\n", b"\r", b""):
            log.warning(
                "%s does not end with a line break: if the file was cut short (an interrupted download or "
                "copy), its last row %s is incomplete",
                path,
                ",".join(map(str, frame.iloc[-1])) if len(frame) else "",
            )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(repr, frame.columns))}. "
            f"Expected header: {','.join(columns)}."
        )
    if frame.empty:
        raise DataError(f"{path}: has a header but no rows.")
    frame = frame[[*columns, *(c for c in optional if c in frame.columns)]]
    for col in columns:
        blank = frame[col].str.strip() == ""
        if blank.any():
            line = int(np.flatnonzero(blank.to_numpy())[0]) + 2
            raise DataError(f"{path}:{line}: empty value in column {col!r} ({int(blank.sum())} empty cell(s) in all).")
    dup = frame["image"].duplicated(keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())
        name = frame["image"].iloc[rows[0]]
        lines = [int(r) + 2 for r in np.flatnonzero((frame["image"] == name).to_numpy())]
        raise DataError(
            f"{path}: duplicate image {name!r} on lines {', '.join(map(str, lines))} "
            f"({int(frame['image'].duplicated().sum())} duplicate row(s) in all). Each image must appear once."
        )
    return frame.reset_index(drop=True)


def _invisible(text: str) -> str:
    """``U+XXXX`` of the first control or format (invisible) character of ``text``, "" if none."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf"):
            return f"U+{ord(ch):04X}"
    return ""


def check_labels(frame: pd.DataFrame, path: Path, columns: Sequence[str] = ("individual_id", "species")) -> None:
    """Reject ids and species that would break the submission or silently split a class: whitespace anywhere
    (Kaggle separates predictions with spaces; a trailing space makes a second class), invisible or control
    characters (a NUL, a zero-width space: two ids that look the same), the reserved
    ``new_individual``, and names equal but for letter case (``Whale_1`` and ``whale_1``: one animal or two?)."""
    for col in columns:
        values = frame[col]
        spaced = values.str.contains(r"\s", regex=True)
        if spaced.any():
            i = int(np.flatnonzero(spaced.to_numpy())[0])
            raise DataError(
                f"{path}:{i + 2}: {col} {values.iloc[i]!r} contains whitespace ({int(spaced.sum())} "
                f"row(s) in all); ids must be single tokens, e.g. {'_'.join(values.iloc[i].split())!r}."
            )
        hidden = values.map(_invisible)
        if (hidden != "").any():
            i = int(np.flatnonzero((hidden != "").to_numpy())[0])
            raise DataError(
                f"{path}:{i + 2}: {col} {values.iloc[i]!r} contains the invisible or control character "
                f"{hidden.iloc[i]}; ids must be visible text."
            )
        reserved = values.str.lower() == NEW_INDIVIDUAL
        if reserved.any():
            i = int(np.flatnonzero(reserved.to_numpy())[0])
            raise DataError(
                f"{path}:{i + 2}: {col} {values.iloc[i]!r} is reserved for the prediction of an unseen "
                f"animal; rename it."
            )
        distinct = pd.Series(values.unique())
        clash = distinct[distinct.str.lower().duplicated(keep=False)]
        if len(clash):
            first = clash.str.lower().iloc[0]
            names = sorted(clash[clash.str.lower() == first])
            lines = [int(np.flatnonzero((values == n).to_numpy())[0]) + 2 for n in names]
            raise DataError(
                f"{path}: {col} values {' and '.join(map(repr, names))} (lines "
                f"{', '.join(map(str, lines))}) differ only in letter case; use one spelling."
            )


MAX_NAME_BYTES = 200
MIN_INDIVIDUALS = 5


def safe_name(name: str, where: str) -> str:
    """Reject image names that could point outside their images folder."""
    if (
        os.path.isabs(name)
        or name.startswith(("/", "\\"))
        or ".." in Path(name).parts
        or "\\" in name
        or "/" in name
        or "\x00" in name
        or name in (".", "")
    ):
        raise DataError(f"{where}: image name {name!r} is not a plain file name inside the images folder.")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise DataError(
            f"{where}: image name {name[:40]!r}... is {len(name.encode())} bytes long; at most "
            f"{MAX_NAME_BYTES} fit (the stored copies add to the name, file systems stop at 255); "
            "rename the file."
        )
    return name


def _check_listed(frame: pd.DataFrame, csv_path: Path, images_dir: Path) -> None:
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: folder not found (listed images in {csv_path.name} live there).")
    with os.scandir(images_dir) as entries:
        links = {}
        present = set()
        irregular = {}  # a FIFO or device would hang the first read of it; a folder cannot be read
        for entry in entries:
            present.add(entry.name)
            if entry.is_symlink():
                links[entry.name] = entry.path
            if not entry.is_file():
                irregular[entry.name] = entry.path
    for i, name in enumerate(frame["image"]):
        safe_name(name, f"{csv_path}:{i + 2}")
    if links:  # a link may point inside the dataset folder (deduplicated data), never out of it
        root = images_dir.parent.resolve()
        for i, name in enumerate(frame["image"]):
            if name in links and not Path(os.path.realpath(links[name])).is_relative_to(root):
                raise DataError(
                    f"{csv_path}:{i + 2}: image {name!r} is a symbolic link to "
                    f"{os.path.realpath(links[name])}, outside the dataset folder {root}; copy the file "
                    "into the dataset instead."
                )
    odd = np.flatnonzero(frame["image"].isin(irregular).to_numpy())
    if len(odd):
        name = frame["image"].iloc[odd[0]]
        raise DataError(
            f"{csv_path}:{odd[0] + 2}: image {name!r} in {images_dir} is {file_kind(irregular[name])}, not an image "
            f"file ({len(odd)} such listed name(s) in all)."
        )
    absent = ~frame["image"].isin(present)
    if absent.any():
        rows = np.flatnonzero(absent.to_numpy())
        raise DataError(
            f"{csv_path}:{rows[0] + 2}: image {frame['image'].iloc[rows[0]]!r} is listed but not in {images_dir} "
            f"({len(rows)} listed image(s) missing in all)."
        )


@dataclass(frozen=True)
class KaggleDataset:
    """A validated dataset directory."""

    root: Path
    train: pd.DataFrame  # image, species, individual_id
    test_images: list[str]  # in sample_submission order
    solution: pd.DataFrame | None  # image, individual_id

    @property
    def train_dir(self) -> Path:
        return self.root / "train_images"

    @property
    def test_dir(self) -> Path:
        return self.root / "test_images"

    def train_paths(self, images: Sequence[str] | None = None) -> list[Path]:
        return [self.train_dir / n for n in (self.train["image"] if images is None else images)]

    def test_paths(self) -> list[Path]:
        return [self.test_dir / n for n in self.test_images]


def load_dataset(root: str | Path) -> KaggleDataset:
    """Read and validate ``root`` (cheap checks only; see :func:`check_images` for decoding every file)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found. Set data.dir in params.yaml to the unpacked Kaggle data.")
    train_csv = root / "train.csv"
    train = read_csv(train_csv, TRAIN_COLUMNS)
    check_labels(train, train_csv)
    n_ids = train["individual_id"].nunique()
    if n_ids < MIN_INDIVIDUALS:
        raise DataError(
            f"{train_csv}: {n_ids} individual(s); MAP@5 ranks {MIN_INDIVIDUALS} distinct individuals per "
            f"photo, so at least {MIN_INDIVIDUALS} are needed."
        )
    _check_listed(train, train_csv, root / "train_images")
    unlisted = sorted(set(n for n in os.listdir(root / "train_images") if not n.startswith(".")) - set(train["image"]))
    if unlisted:
        log.warning(
            "%s holds %d file(s) that %s does not list (e.g. %r); they are not used. Expected if you "
            "listed a subset on purpose; otherwise train.csv may have been cut short.",
            root / "train_images",
            len(unlisted),
            train_csv.name,
            unlisted[0],
        )
    test_dir = root / "test_images"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: folder not found.")
    test_files = sorted(n for n in os.listdir(test_dir) if not n.startswith("."))
    if not test_files:
        raise DataError(f"{test_dir}: folder is empty; there is nothing to predict.")
    sub_csv = root / "sample_submission.csv"
    sub = read_csv(sub_csv, SUBMISSION_COLUMNS)
    _check_listed(sub, sub_csv, test_dir)
    extra = sorted(set(test_files) - set(sub["image"]))
    if extra:
        raise DataError(
            f"{sub_csv}: disagrees with {test_dir}: {len(extra)} file(s) in the folder are not listed, "
            f"e.g. {extra[0]!r}. sample_submission.csv must list every test image exactly once."
        )
    solution = None
    sol_csv = root / "solution.csv"
    if sol_csv.exists():
        solution = read_csv(sol_csv, SOLUTION_COLUMNS)
        missing = set(sub["image"]) - set(solution["image"])
        if missing:
            raise DataError(f"{sol_csv}: no answer for {len(missing)} test image(s), e.g. {sorted(missing)[0]!r}.")
    return KaggleDataset(root, train, list(sub["image"]), solution)
