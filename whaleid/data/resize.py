"""The `resize` stage's work: decode every image once, crop it to its box, resize it to the model's input size.

The competition's photos are 1-4 megapixel JPEGs; decoding one costs far more than a training step of a small
model on it. Resizing once, in parallel, to exactly what ``model.img_size`` needs (a square ``img_size`` image,
the same ``INTER_AREA`` resize the transforms would do first) makes every epoch read small files instead: BMP by
default (lossless and almost free to decode), or PNG or JPEG to save disk (``resize.format``).

Crops: an optional boxes CSV (``image,x1,y1,x2,y2`` in pixels of the original image, as the public detector
crops of the competition are shared) is applied before resizing; each box grows by ``margin`` times its width
and height on every side and is clipped to the image. Images without a box are used whole.

Resumable: each resized image is first written to ``.whaleid_cache/resize/`` under a name keyed by its source
file (size, mtime), the size and the crop, so an interrupted run redoes only the images it had not reached.
Every file is decoded, so a corrupt or truncated JPEG is reported here, before any training starts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from whaleid.core.atomic import write_bytes
from whaleid.core.errors import DataError
from whaleid.core.parallel import map_chunks
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import Box, check_box, crop_to_box
from whaleid.data.images import read_image
from whaleid.data.layout import safe_name

log = logging.getLogger(__name__)


def prepare_image(image: np.ndarray, size: int, box: Box | None = None, margin: float = 0.0) -> np.ndarray:
    """Crop ``image`` (RGB) to ``box`` (+ margin) and resize it to ``size`` x ``size`` with area interpolation."""
    image = crop_to_box(image, box, margin)
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Job:
    src: Path
    cached: Path
    box: Box | None


def _cache_key(src: Path, size: int, box: Box | None, margin: float, encoding: tuple[str, int]) -> str:
    st = src.stat()
    raw = f"{src.name}|{st.st_size}|{st.st_mtime_ns}|{size}|{box}|{margin if box is not None else 0}|{encoding}"
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()[:12]


def encode_image(image: np.ndarray, fmt: str = "bmp", jpeg_quality: int = 95) -> bytes:
    """RGB uint8 image -> file bytes in ``fmt`` (bmp, png or jpg)."""
    flags = {"bmp": [], "png": [cv2.IMWRITE_PNG_COMPRESSION, 1], "jpg": [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]}
    ok, data = cv2.imencode(f".{fmt}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), flags[fmt])
    if not ok:  # pragma: no cover - encoding a valid uint8 array does not fail
        raise DataError(f"could not encode an image of shape {image.shape} as {fmt}")
    return data.tobytes()


def _run_chunk(
    jobs: list[Job], size: int, margin: float, encoding: tuple[str, int], max_megapixels: float
) -> list[str]:
    errors = []
    for job in jobs:
        if job.cached.exists():
            continue
        try:
            image = read_image(job.src, max_megapixels)
            if job.box is not None:
                check_box(job.box, image.shape[1], image.shape[0], str(job.src))
            data = encode_image(prepare_image(image, size, job.box, margin), *encoding)
        except DataError as exc:
            errors.append(str(exc))
            continue
        write_bytes(job.cached, data)
    return errors


def folder_digest(folder: Path) -> str:
    """SHA-256 over the names and contents of every file below ``folder`` (sorted): a content fingerprint
    that, unlike modification times, survives DVC checkouts and regeneration of identical files."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(folder).as_posix()}\0".encode())
            h.update(hashlib.sha1(p.read_bytes()).digest())
    return h.hexdigest()


def resized_name(name: str, fmt: str = "bmp") -> str:
    """File name of the resized copy of image ``name`` in format ``fmt``."""
    return f"{name}.{fmt}"


def resize_split(
    sources: Sequence[Path],
    out_dir: Path,
    cache_dir: Path,
    *,
    size: int,
    boxes: dict[str, Box] | None = None,
    margin: float = 0.0,
    fmt: str = "bmp",
    jpeg_quality: int = 95,
    desc: str = "resize",
    run: Runtime = Runtime(),
) -> int:
    """Resize ``sources`` into ``out_dir`` (which must exist) as ``fmt`` files; return how many boxes were applied.

    Raises :class:`DataError` listing every unreadable image (up to ten by name) after all were tried.
    """
    boxes = boxes or {}
    encoding = (fmt, jpeg_quality if fmt == "jpg" else 0)
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for src in sources:
        box = boxes.get(src.name)
        jobs.append(Job(src, cache_dir / f"{src.name}.{_cache_key(src, size, box, margin, encoding)}.{fmt}", box))
    todo = [j for j in jobs if not j.cached.exists()]
    if len(todo) < len(jobs):
        log.info(
            "%s: %d of %d images already resized in %s (resuming)", desc, len(jobs) - len(todo), len(jobs), cache_dir
        )
    errors = map_chunks(
        _run_chunk,
        todo,
        size,
        margin,
        encoding,
        run.max_megapixels,
        n_jobs=run.n_jobs,
        desc=desc,
        progress=run.progress,
    )
    if errors:
        shown = "\n  ".join(errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DataError(
            f"{len(errors)} image(s) cannot be read or cropped; fix or remove them (and their CSV rows):\n  {shown}{more}"
        )
    for job in jobs:
        dst = out_dir / resized_name(safe_name(job.src.name, str(job.src)), fmt)
        try:
            os.link(job.cached, dst)
        except OSError:
            shutil.copyfile(job.cached, dst)
    return sum(j.box is not None for j in jobs)
