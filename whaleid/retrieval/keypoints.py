"""Local features of photos (stage ``keypoints``; ``identify`` and ``gallery add`` for new photos): HotSpotter-style
keypoints for the stripes, spots, scars and notches photo-ID has long relied on.

Every image is decoded once, cropped to its box (``crop.*``), resized so its longer side is ``local.max_side`` and
described by at most ``local.max_keypoints`` keypoints (``local.method``: ``sift`` or ``orb``; OpenCV 5 keeps AKAZE
in its contrib package). A :class:`KeypointSet` holds many images' keypoints concatenated and is saved as one
``.npz`` (points, descriptors, offsets; no pickle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from whaleid.config import LocalConfig
from whaleid.core.parallel import map_chunks
from whaleid.core.runtime import DEFAULT_MAX_MEGAPIXELS, Runtime
from whaleid.data.boxes import Box, crop_to_box
from whaleid.data.images import read_image

DETECTORS = {
    "sift": lambda n: cv2.SIFT_create(nfeatures=n),
    "orb": lambda n: cv2.ORB_create(nfeatures=n),
}
BINARY = {"orb"}  # Hamming-distance descriptors


def keypoint_photo(
    path: str | Path, box: Box | None, margin: float, max_side: int, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
) -> np.ndarray:
    """RGB uint8 photo as local features see it: cropped to ``box`` (grown by ``margin``), longer side resized to
    ``max_side``."""
    image = crop_to_box(read_image(path, max_megapixels), box, margin)
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def keypoint_image(
    path: str | Path, box: Box | None, margin: float, max_side: int, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
) -> np.ndarray:
    """:func:`keypoint_photo` in grayscale uint8 (what SIFT and ORB take)."""
    return cv2.cvtColor(keypoint_photo(path, box, margin, max_side, max_megapixels), cv2.COLOR_RGB2GRAY)


def detect(gray: np.ndarray, method: str, max_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint positions (n, 2) float32 and descriptors (n, d) uint8, the ``max_keypoints`` strongest."""
    found, desc = DETECTORS[method](max_keypoints).detectAndCompute(gray, None)
    if desc is None or not found:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32 if method in BINARY else 128), np.uint8)
    order = np.argsort([-k.response for k in found], kind="stable")[:max_keypoints]
    points = np.array([found[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
    # SIFT descriptors are floats in [0, 255] (OpenCV scales and clips them): uint8 keeps them at a quarter size.
    return points, np.clip(np.rint(desc[order]), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class KeypointSet:
    """Keypoints of many images, concatenated: image ``i`` owns rows ``offsets[i]:offsets[i + 1]``."""

    images: np.ndarray  # (N,) names
    points: np.ndarray  # (M, 2) float32, pixels of the photo at local.max_side
    descriptors: np.ndarray  # (M, d) uint8 (SIFT, ORB) or float16 (learned features)
    offsets: np.ndarray  # (N + 1,) int64
    sizes: np.ndarray | None = None  # (N, 2) int64 width, height each photo was described at (learned features)

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.points[a:b], self.descriptors[a:b]

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"images": self.images, "points": self.points, "descriptors": self.descriptors, "offsets": self.offsets}
        return out if self.sizes is None else {**out, "sizes": self.sizes}

    def rows_of(self, names: Sequence[str]) -> np.ndarray:
        """Row of each image name here (-1 where absent)."""
        index = {n: i for i, n in enumerate(self.images.tolist())}
        return np.array([index.get(str(n), -1) for n in names], dtype=np.int64)

    def concat(self, other: KeypointSet) -> KeypointSet:
        """This set followed by ``other``'s images."""
        sizes = None if self.sizes is None or other.sizes is None else np.concatenate([self.sizes, other.sizes])
        return KeypointSet(
            np.concatenate([self.images, other.images]),
            np.concatenate([self.points, other.points]),
            np.concatenate([self.descriptors, other.descriptors]),
            np.concatenate([self.offsets, self.offsets[-1] + other.offsets[1:]]),
            sizes,
        )

    def subset(self, keep: np.ndarray) -> KeypointSet:
        """The images where ``keep`` (N,) is True, in order."""
        rows = np.flatnonzero(keep)
        spans = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in rows]
        take = np.concatenate(spans) if spans else np.zeros(0, np.int64)
        counts = np.array([len(s) for s in spans], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        sizes = None if self.sizes is None else self.sizes[rows]
        return KeypointSet(self.images[rows], self.points[take], self.descriptors[take], offsets, sizes)


def _detect_chunk(
    jobs: list[tuple[str, Box | None]], margin: float, cfg: LocalConfig, method: str, max_megapixels: float
) -> list[tuple]:
    return [
        detect(keypoint_image(p, box, margin, cfg.max_side, max_megapixels), method, cfg.max_keypoints)
        for p, box in jobs
    ]


def detect_all(
    paths: Sequence[Path],
    boxes: dict[str, Box] | None,
    margin: float,
    cfg: LocalConfig,
    *,
    method: str | None = None,
    desc: str = "keypoints",
    run: Runtime = Runtime(),
) -> KeypointSet:
    """SIFT or ORB keypoints (``method``, default ``cfg.method``) of every image in ``paths`` (named by file name),
    in parallel with a progress bar."""
    method = method or cfg.method
    jobs = [(str(p), (boxes or {}).get(Path(p).name)) for p in paths]
    found = map_chunks(
        _detect_chunk,
        jobs,
        margin,
        cfg,
        method,
        run.max_megapixels,
        n_jobs=run.n_jobs,
        desc=desc,
        progress=run.progress,
    )
    d = 32 if method in BINARY else 128
    counts = np.array([len(p) for p, _ in found], dtype=np.int64)
    return KeypointSet(
        images=np.asarray([Path(p).name for p in paths], dtype=str),
        points=np.concatenate([p for p, _ in found]) if found else np.zeros((0, 2), np.float32),
        descriptors=np.concatenate([x for _, x in found]) if found else np.zeros((0, d), np.uint8),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )
