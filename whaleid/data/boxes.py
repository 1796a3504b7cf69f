"""Boxes: where the animal is in a photo, ``(x1, y1, x2, y2)`` in pixels of the original image.

A boxes CSV (``image,x1,y1,x2,y2``, as the public detector crops of the competition are shared; ``crop.boxes``)
is read and checked here (errors name the file and line), each box grows by ``crop.margin`` of its size on every
side and is clipped to its photo before cropping, and the detector's boxes are compared with the true ones by IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from whaleid.core.errors import DataError, short_reason

BOX_COLUMNS = ("image", "x1", "y1", "x2", "y2")


Box = tuple[float, float, float, float]


def read_boxes(path: str | Path) -> dict[str, Box]:
    """Read a boxes CSV into ``{image: (x1, y1, x2, y2)}``; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: boxes file not found (crop.boxes). Give a CSV image,x1,y1,x2,y2 or null.")
    try:
        frame = pd.read_csv(path, dtype={"image": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a valid CSV file: {short_reason(exc)}") from None
    missing = [c for c in BOX_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected header {','.join(BOX_COLUMNS)}.")
    coords = frame[list(BOX_COLUMNS[1:])].apply(pd.to_numeric, errors="coerce")
    bad = coords.isna().any(axis=1).to_numpy() | ~np.isfinite(coords.to_numpy(dtype=float)).all(axis=1)
    bad |= (coords["x2"] <= coords["x1"]).to_numpy() | (coords["y2"] <= coords["y1"]).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}:{i + 2}: box ({', '.join(str(v) for v in frame.iloc[i][list(BOX_COLUMNS[1:])].tolist())}) "
            f"for {frame['image'].iloc[i]!r} is "
            f"not numbers with x1 < x2 and y1 < y2 ({int(bad.sum())} bad row(s) in all)."
        )
    dup = frame["image"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}:{i + 2}: second box for {frame['image'].iloc[i]!r}; give one box per image.")
    values = coords.to_numpy(dtype=float)
    if len(values) and values.max() <= 1.0:
        raise DataError(
            f"{path}: every coordinate is between 0 and 1: normalised (YOLO-style) boxes? crop.boxes "
            "needs pixels of the original image (x1 = (x_centre - width / 2) * image width, ...)."
        )
    return {name: tuple(v) for name, v in zip(frame["image"], values, strict=True)}


AUTO_BOXES = "boxes.csv"  # crop.boxes auto: this file in data.dir, when there is one


def boxes_path(boxes: str | None, data_dir: str | Path) -> Path | None:
    """The boxes CSV that ``crop.boxes`` names: ``auto`` is ``<data_dir>/boxes.csv`` if it exists, else none."""
    if boxes is None:
        return None
    if boxes == "auto":
        path = Path(data_dir, AUTO_BOXES)
        return path if path.is_file() else None
    return Path(boxes)


def check_boxes_dataset(boxes: dict[str, Box], images: set[str], boxes_path: str | Path, data_dir: str | Path) -> None:
    """Refuse a boxes CSV that names none of ``images`` (the dataset's train and test images)."""
    if not set(boxes) & images:
        raise DataError(
            f"crop.boxes {boxes_path} has boxes for {len(boxes)} images, none of them in {data_dir}: "
            "boxes for another dataset? Set crop.boxes to this dataset's CSV or null."
        )


MIN_BOX_INSIDE = 0.5  # share of a box's area that must lie inside its image


def check_box(box: Box, width: int, height: int, name: str) -> None:
    """Refuse a box that lies mostly outside its image (wrong units, another image size, another dataset)."""
    x1, y1, x2, y2 = box
    inside = max(0.0, min(x2, width) - max(x1, 0.0)) * max(0.0, min(y2, height) - max(y1, 0.0))
    if inside < MIN_BOX_INSIDE * (x2 - x1) * (y2 - y1):
        raise DataError(
            f"{name}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies {'mostly ' if inside else ''}outside "
            f"the {width} x {height} image; crop.boxes for another image size or dataset?"
        )


def crop_coords(width: int, height: int, box: Box, margin: float) -> tuple[int, int, int, int]:
    """Integer crop ``(x1, y1, x2, y2)`` (x2, y2 exclusive): ``box`` grown by ``margin`` of its size on every
    side, clipped to the image, at least one pixel wide and high."""
    x1, y1, x2, y2 = box
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    left = int(np.clip(np.floor(x1 - dx), 0, width - 1))
    top = int(np.clip(np.floor(y1 - dy), 0, height - 1))
    right = int(np.clip(np.ceil(x2 + dx), left + 1, width))
    bottom = int(np.clip(np.ceil(y2 + dy), top + 1, height))
    return left, top, right, bottom


def crop_to_box(image: np.ndarray, box: Box | None, margin: float) -> np.ndarray:
    """``image`` (H, W, ...) cropped to :func:`crop_coords` of ``box`` (a view; the whole image without a box)."""
    if box is None:
        return image
    left, top, right, bottom = crop_coords(image.shape[1], image.shape[0], box, margin)
    return image[top:bottom, left:right]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corresponding rows of two ``(N, 4)`` arrays of ``x1, y1, x2, y2`` boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def iou_summary(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean IoU and the shares of boxes with IoU >= 0.5 and >= 0.75 (4 decimals)."""
    iou = box_iou(pred, true)
    return {
        k: round(float(v), 4)
        for k, v in (("iou", iou.mean()), ("iou50", (iou >= 0.5).mean()), ("iou75", (iou >= 0.75).mean()))
    }


def normalise(boxes: Sequence[Box], sizes: np.ndarray) -> np.ndarray:
    """Pixel boxes -> ``[0, 1]`` coordinates of their photo (clipped)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    wh = np.tile(np.asarray(sizes, np.float64).reshape(-1, 2), 2)
    return np.clip(b / wh, 0.0, 1.0)


def to_pixels(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``[0, 1]`` boxes -> pixels of their photo."""
    return np.asarray(boxes, np.float64).reshape(-1, 4) * np.tile(np.asarray(sizes, np.float64).reshape(-1, 2), 2)


def pixel_boxes(pred: np.ndarray, sizes: np.ndarray) -> list[Box]:
    """The detector's boxes as the pipeline stores them: pixels rounded to 0.1 (boxes.csv and `whaleid identify`
    must crop alike)."""
    return [tuple(round(float(v), 1) for v in row) for row in to_pixels(pred, sizes)]
