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

import hashlib
import io
import logging
import os
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from whaleid.core.errors import DataError
from whaleid.core.parallel import map_chunks

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ("image", "species", "individual_id")
SUBMISSION_COLUMNS = ("image", "predictions")
SOLUTION_COLUMNS = ("image", "individual_id")
NEW_INDIVIDUAL = "new_individual"
SOLUTION_BOXES = "solution_boxes.csv"  # optional answer key: the test photos' true boxes (scores stage detect only)


__all__ = ["DataError", "KaggleDataset", "load_dataset", "read_image", "check_images", "ImageDataset"]


def read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read a CSV as strings and check it has ``columns``, rows, no empty cells and no duplicate images."""
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
    frame = frame[list(columns)]
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
        for entry in entries:
            present.add(entry.name)
            if entry.is_symlink():
                links[entry.name] = entry.path
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


def _is_truncated_jpeg(data: bytes) -> bool:
    """True for a JPEG whose image data stops before its end-of-image marker. The header segments are walked by
    their lengths up to the first start-of-scan (an EXIF thumbnail inside APP1, with its own markers, is skipped);
    after it, the FF D9 marker must follow somewhere (byte stuffing keeps it out of the scan data). Bytes after the
    marker, which many phones and editors append, are fine."""
    if not data.startswith(b"\xff\xd8"):
        return False
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False  # not a marker where one should be: the decoder judges
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", i) < 0
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return True  # the file ends inside its header


DEFAULT_MAX_MEGAPIXELS = 100.0  # data.max_megapixels; OpenCV itself refuses 2**30 pixels and more


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, without decoding; None when Pillow cannot tell. BMP (what the
    resize stage writes, read once per image per epoch) is parsed here directly, at a tenth of Pillow's cost."""
    if data[:2] == b"BM" and len(data) >= 26 and int.from_bytes(data[14:18], "little") >= 40:
        return int.from_bytes(data[18:22], "little", signed=True), abs(
            int.from_bytes(data[22:26], "little", signed=True)
        )
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # header only: Pillow's own bomb check would hide the size this function reports
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - unknown formats: the decoder judges
        return None


def decode_image(data: bytes, name: str = "<bytes>", max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """Decode image bytes to RGB uint8 (H, W, 3); raise :class:`DataError` naming ``name`` if impossible. A photo
    whose header claims more than ``max_megapixels`` is refused before decoding, so decoding never takes more
    than ``3 * max_megapixels`` MB (plus the file itself)."""
    if not data:
        raise DataError(f"{name}: the image file is empty.")
    if _is_truncated_jpeg(data):
        raise DataError(f"{name}: truncated JPEG (no end-of-image marker); re-download or remove this file.")
    size = image_size(data)
    if size is not None and size[0] * size[1] > max_megapixels * 1e6:
        raise DataError(
            f"{name}: {size[0]} x {size[1]} pixels, over data.max_megapixels ({max_megapixels:g} MP; "
            f"{3 * size[0] * size[1] / 1e9:.1f} GB decoded per worker); downscale it (the model sees a "
            "few hundred pixels) or raise data.max_megapixels."
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # applies EXIF orientation, CMYK -> BGR
    except cv2.error as exc:
        raise DataError(f"{name}: OpenCV cannot decode the image ({str(exc).strip().splitlines()[-1]}).") from None
    if img is None:
        raise DataError(f"{name}: cannot decode the image (corrupt or unsupported format).")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def read_image(path: str | Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 (see :func:`decode_image`); non-ASCII paths work."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image file: {exc.strerror}.") from None
    return decode_image(data, str(path), max_megapixels)


def _check_chunk(paths: list[Path], max_megapixels: float) -> list[tuple[str, str]]:
    out = []
    for p in paths:
        try:
            data = p.read_bytes()
        except OSError as exc:
            out.append((f"{p}: cannot read the image file: {exc.strerror}.", ""))
            continue
        try:
            decode_image(data, str(p), max_megapixels)
            out.append(("", hashlib.sha1(data).hexdigest()))
        except DataError as exc:
            out.append((str(exc), ""))
    return out


def check_images(
    paths: Sequence[Path], n_jobs: int = -1, progress: bool = True, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
) -> tuple[list[str], list[str]]:
    """Decode every image in parallel. Returns one message per unreadable file (empty when all are fine) and
    the SHA-1 of every file's bytes ("" for unreadable ones), in the order of ``paths``."""
    results = map_chunks(
        _check_chunk, list(paths), max_megapixels, chunk_size=256, n_jobs=n_jobs, desc="check images", progress=progress
    )
    return [e for e, _ in results if e], [d for _, d in results]


def same_photos(
    train_names: Sequence[str], train_digests: Sequence[str], test_names: Sequence[str], test_digests: Sequence[str]
) -> list[tuple[str, str]]:
    """(test image, train image) pairs whose files are byte for byte the same photo."""
    by_digest = {d: n for n, d in zip(train_names, train_digests, strict=True) if d}
    return [(t, by_digest[d]) for t, d in zip(test_names, test_digests, strict=True) if d in by_digest]


class ImageDataset:
    """Images with optional integer labels, each decoded and passed through ``transform`` (image -> tensor; see
    :mod:`whaleid.model.transforms`).

    ``labels`` is (N,) or (N, k) integers (e.g. individual and species); a row comes back as a tensor. A plain
    map-style dataset (torch.utils.data.DataLoader takes any object with ``__len__`` and ``__getitem__``), so that
    the stages that only read CSVs do not import torch.
    Items are indexed either by ``int`` or by ``(index, seed)``: with a seed the random transform is re-seeded
    for that item, so augmentation depends only on (seed, index), not on worker count or resume point.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        transform: Callable,
        labels: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(self.paths):
            raise ValueError("paths and labels differ in length")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Any, Any]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        img = read_image(self.paths[index])
        if seed is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(int(seed))
        out = self.transform(img)
        if self.labels is None:
            return out, -1
        label = self.labels[index]
        if label.ndim == 0:
            return out, int(label)
        import torch

        return out, torch.from_numpy(label.copy())
