"""Photos decoded once and resized to squares, with each original width and height: what the box detector trains
on and boxes (``detect.img_size``; the aspect ratio is dropped, since boxes are normalised per axis and map back
exactly). Decoded chunks can be cached in a folder, so that an interrupted stage does not decode them again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from whaleid.core.atomic import load_npz, save_npz
from whaleid.core.parallel import map_chunks
from whaleid.core.runtime import Runtime
from whaleid.data.images import read_image

_CHUNK = 64


def _load_chunk(paths: list[str], size: int, max_megapixels: float) -> list[tuple[np.ndarray, int, int]]:
    cv2.setNumThreads(1)
    out = []
    for p in paths:
        image = read_image(p, max_megapixels)
        h, w = image.shape[:2]
        out.append((cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), w, h))
    return out


def _cached_chunk(paths: list[str], size: int, max_megapixels: float, cache: str) -> list[tuple[np.ndarray, int, int]]:
    """:func:`_load_chunk`, kept under ``cache`` by the chunk's names, sizes, mtimes and ``size``."""
    stats = [(p, st.st_size, st.st_mtime_ns) for p in paths for st in [Path(p).stat()]]
    key = hashlib.sha256(repr([*stats, size]).encode()).hexdigest()[:24]
    file = Path(cache, f"{key}.npz")
    if file.exists():
        try:
            z = load_npz(file)
            return [(img, int(w), int(h)) for img, (w, h) in zip(z["images"], z["sizes"], strict=True)]
        except Exception:  # noqa: BLE001 - a damaged cache file is decoded again
            file.unlink(missing_ok=True)
    out = _load_chunk(paths, size, max_megapixels)
    save_npz(file, images=np.stack([o[0] for o in out]), sizes=np.array([(o[1], o[2]) for o in out], np.int64))
    return out


@dataclass
class Photos:
    """Photos resized to squares for the detector, with each original width and height."""

    images: np.ndarray  # (N, size, size, 3) uint8
    sizes: np.ndarray  # (N, 2) original width, height


def load_photos(
    paths: Sequence[Path],
    size: int,
    *,
    run: Runtime = Runtime(),
    cache: Path | None = None,
    desc: str = "detect: decode",
) -> Photos:
    """Decode and resize ``paths`` (in parallel, with a progress bar; resumable through ``cache``)."""
    items = [str(p) for p in paths]
    if not items:
        return Photos(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, 2), np.int64))
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        rows = map_chunks(
            _cached_chunk,
            items,
            size,
            run.max_megapixels,
            str(cache),
            chunk_size=_CHUNK,
            n_jobs=run.n_jobs,
            desc=desc,
            progress=run.progress,
        )
    else:
        rows = map_chunks(
            _load_chunk,
            items,
            size,
            run.max_megapixels,
            chunk_size=_CHUNK,
            n_jobs=run.n_jobs,
            desc=desc,
            progress=run.progress,
        )
    return Photos(np.stack([r[0] for r in rows]), np.array([(r[1], r[2]) for r in rows], np.int64))
