"""Local-feature matching fused with the global embedding (HotSpotter-style keypoints, WildFusion-style calibrated
fusion): what photo-ID has long relied on for stripes, spots, scars and notches.

* :func:`detect_all` (stage ``keypoints``): every image is decoded once, cropped to its box (``crop.*``), resized so
  its longer side is ``local.max_side`` and described by at most ``local.max_keypoints`` keypoints (``sift``
  or ``orb``; OpenCV 5 keeps AKAZE in its contrib package); cached as one ``.npz`` per split (points, descriptors, offsets; no pickle).
* :func:`pair_inliers` (stage ``local``): each query is matched against its ``local.top_pairs`` nearest gallery
  images from the Faiss search: nearest-neighbour descriptor matches kept by Lowe's ratio test (``local.ratio``),
  then a RANSAC similarity transform (``cv2.estimateAffinePartial2D``, ``local.ransac_px``); the score of a pair
  is its number of geometric inliers. Pairs run in parallel (joblib) with a progress bar.
* :class:`Calibration`: a logistic regression on (cosine, log(1 + inliers)) fitted on the validation queries'
  pairs (same individual or not) turns both into one probability; :func:`fuse` replaces each neighbour's cosine
  by it and re-sorts, so candidate ranking and the new_individual threshold work on the fused score.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from whaleid.config import LocalConfig
from whaleid.core.parallel import map_chunks
from whaleid.data.layout import DEFAULT_MAX_MEGAPIXELS, read_image
from whaleid.data.resize import Box, crop_coords
from whaleid.rule.predict import Neighbours

log = logging.getLogger(__name__)

DETECTORS = {
    "sift": lambda n: cv2.SIFT_create(nfeatures=n),
    "orb": lambda n: cv2.ORB_create(nfeatures=n),
}
BINARY = {"orb"}  # Hamming-distance descriptors
MIN_SCALE = 0.25  # a transform shrinking or growing the photo more than 4x is no match (degenerate RANSAC fits)


def keypoint_image(
    path: str | Path, box: Box | None, margin: float, max_side: int, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
) -> np.ndarray:
    """Grayscale uint8 image: cropped to ``box`` (grown by ``margin``), longer side resized to ``max_side``."""
    image = read_image(path, max_megapixels)
    if box is not None:
        left, top, right, bottom = crop_coords(image.shape[1], image.shape[0], box, margin)
        image = image[top:bottom, left:right]
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


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
    points: np.ndarray  # (M, 2) float32
    descriptors: np.ndarray  # (M, d) uint8
    offsets: np.ndarray  # (N + 1,) int64

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.points[a:b], self.descriptors[a:b]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"images": self.images, "points": self.points, "descriptors": self.descriptors, "offsets": self.offsets}


def _detect_chunk(
    jobs: list[tuple[str, Box | None]], margin: float, cfg: LocalConfig, max_megapixels: float
) -> list[tuple]:
    return [
        detect(keypoint_image(p, box, margin, cfg.max_side, max_megapixels), cfg.method, cfg.max_keypoints)
        for p, box in jobs
    ]


def detect_all(
    paths: Sequence[Path],
    boxes: dict[str, Box] | None,
    margin: float,
    cfg: LocalConfig,
    n_jobs: int = -1,
    desc: str = "keypoints",
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
) -> KeypointSet:
    """Keypoints of every image in ``paths`` (named by file name), in parallel with a progress bar."""
    jobs = [(str(p), (boxes or {}).get(Path(p).name)) for p in paths]
    found = map_chunks(_detect_chunk, jobs, margin, cfg, max_megapixels, n_jobs=n_jobs, desc=desc)
    d = 32 if cfg.method in BINARY else 128
    counts = np.array([len(p) for p, _ in found], dtype=np.int64)
    return KeypointSet(
        images=np.asarray([Path(p).name for p in paths], dtype=str),
        points=np.concatenate([p for p, _ in found]) if found else np.zeros((0, 2), np.float32),
        descriptors=np.concatenate([x for _, x in found]) if found else np.zeros((0, d), np.uint8),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )


def match_pair(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    binary: bool,
    ratio: float,
    ransac_px: float,
    min_matches: int = 4,
) -> int:
    """Geometric inliers between two images' keypoints: one-to-one ratio-test matches that a RANSAC similarity
    transform (rotation, uniform scale within [1/4, 4], translation) explains within ``ransac_px`` pixels; 0 with
    fewer than ``min_matches`` matches or a degenerate transform."""
    (pa, da), (pb, db) = a, b
    if len(da) < 2 or len(db) < 2:
        return 0
    if binary:
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        pairs = matcher.knnMatch(da, db, k=2)
    else:
        matcher = cv2.BFMatcher(cv2.NORM_L2)
        pairs = matcher.knnMatch(da.astype(np.float32), db.astype(np.float32), k=2)
    best: dict[int, cv2.DMatch] = {}  # one-to-one: each keypoint of b keeps its closest ratio-test match
    for m, n in (p for p in pairs if len(p) == 2):
        if m.distance < ratio * n.distance and (m.trainIdx not in best or m.distance < best[m.trainIdx].distance):
            best[m.trainIdx] = m
    if len(best) < min_matches:
        return 0
    good = sorted(best.values(), key=lambda m: m.queryIdx)
    src = pa[[m.queryIdx for m in good]]
    dst = pb[[m.trainIdx for m in good]]
    transform, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=ransac_px, maxIters=500, confidence=0.99, refineIters=0
    )
    if transform is None or mask is None:
        return 0
    scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    return int(mask.sum()) if MIN_SCALE <= scale <= 1 / MIN_SCALE else 0


def _match_chunk(jobs: list[tuple[int, int]], query: KeypointSet, gallery: KeypointSet, cfg: LocalConfig) -> list[int]:
    binary = cfg.method in BINARY
    return [match_pair(query.of(q), gallery.of(g), binary, cfg.ratio, cfg.ransac_px) for q, g in jobs]


def pair_inliers(
    query: KeypointSet,
    gallery: KeypointSet,
    query_rows: np.ndarray,
    neighbor_rows: np.ndarray,
    cfg: LocalConfig,
    n_jobs: int = -1,
    desc: str = "match",
) -> np.ndarray:
    """(Q, k) inliers between query ``query_rows[q]`` and gallery ``neighbor_rows[q, j]`` (rows of the keypoint
    sets) for the first ``cfg.top_pairs`` neighbours of each query; 0 beyond them and where a row is -1."""
    top = min(cfg.top_pairs, neighbor_rows.shape[1])
    where = [
        (q, j) for q in range(len(query_rows)) for j in range(top) if neighbor_rows[q, j] >= 0 and query_rows[q] >= 0
    ]
    jobs = [(int(query_rows[q]), int(neighbor_rows[q, j])) for q, j in where]
    counts = map_chunks(_match_chunk, jobs, query, gallery, cfg, chunk_size=256, n_jobs=n_jobs, desc=desc, unit="pair")
    out = np.zeros(neighbor_rows.shape, dtype=np.int32)
    for (q, j), c in zip(where, counts, strict=True):
        out[q, j] = c
    return out


def _features(sims: np.ndarray, inliers: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(sims, np.float64).ravel(), np.log1p(np.asarray(inliers, np.float64)).ravel()], 1)


@dataclass(frozen=True)
class Calibration:
    """P(same individual | cosine, inliers) = sigmoid(bias + w_cos * cos + w_inl * log(1 + inliers))."""

    bias: float
    w_cos: float
    w_inliers: float

    @classmethod
    def fit(cls, sims: np.ndarray, inliers: np.ndarray, same: np.ndarray) -> Calibration:
        """Logistic regression on validation pairs (``same``: the pair shows one individual)."""
        from sklearn.linear_model import LogisticRegression

        same = np.asarray(same, dtype=bool).ravel()
        if same.all() or not same.any():
            raise ValueError("calibration needs validation pairs of both kinds (same and different individuals)")
        model = LogisticRegression(C=10.0, max_iter=1000).fit(_features(sims, inliers), same)
        return cls(float(model.intercept_[0]), float(model.coef_[0, 0]), float(model.coef_[0, 1]))

    def __call__(self, sims: np.ndarray, inliers: np.ndarray) -> np.ndarray:
        x = _features(sims, inliers)
        z = self.bias + self.w_cos * x[:, 0] + self.w_inliers * x[:, 1]
        return (1.0 / (1.0 + np.exp(-z))).reshape(np.shape(sims)).astype(np.float32)


def fuse(nn: Neighbours, inliers: np.ndarray, calibration: Calibration) -> Neighbours:
    """``nn`` with every similarity replaced by the calibrated probability, rows re-sorted best first (ties keep
    the cosine order)."""
    fused = calibration(nn.sims, inliers)
    fused = np.where(nn.neighbors >= 0, fused, -np.inf).astype(np.float32)
    order = np.argsort(-fused, axis=1, kind="stable")
    return Neighbours(
        np.take_along_axis(fused, order, 1),
        np.take_along_axis(nn.neighbors, order, 1),
        nn.gallery_labels,
        nn.query_labels,
    )


def rows_of(kp: KeypointSet, names: Sequence[str]) -> np.ndarray:
    """Row of each image name in ``kp`` (-1 where absent)."""
    index = {n: i for i, n in enumerate(kp.images.tolist())}
    return np.array([index.get(str(n), -1) for n in names], dtype=np.int64)


def neighbour_inliers(
    nn: dict[str, np.ndarray],
    query: KeypointSet,
    gallery: KeypointSet,
    cfg: LocalConfig,
    n_jobs: int = -1,
    desc: str = "match",
) -> np.ndarray:
    """:func:`pair_inliers` for a saved kNN result (arrays ``neighbors``, ``query_images``, ``gallery_images``)."""
    g_rows = rows_of(gallery, nn["gallery_images"])
    nbr = np.where(nn["neighbors"] >= 0, g_rows[np.clip(nn["neighbors"], 0, None)], -1)
    return pair_inliers(query, gallery, rows_of(query, nn["query_images"]), nbr, cfg, n_jobs, desc)


def fuse_neighbours(
    valid: dict[str, dict[str, np.ndarray]],
    test: dict[str, np.ndarray],
    train_kp: KeypointSet,
    test_kp: KeypointSet,
    cfg: LocalConfig,
    n_jobs: int = -1,
) -> tuple[dict, dict, Calibration, dict]:
    """Match every validation and test query against its ``cfg.top_pairs`` nearest gallery images, fit the
    :class:`Calibration` on the validation pairs, and fuse. Returns the fused validation parts and test arrays
    (same keys as given, ``sims``/``neighbors`` replaced), the calibration and statistics."""
    top = cfg.top_pairs
    inl = {name: neighbour_inliers(nn, train_kp, train_kp, cfg, n_jobs, f"match {name}") for name, nn in valid.items()}
    real = np.concatenate([(nn["neighbors"][:, :top] >= 0).ravel() for nn in valid.values()])  # not -1 slots
    sims = np.concatenate([nn["sims"][:, :top].ravel() for nn in valid.values()])[real]
    counts = np.concatenate([inl[n][:, :top].ravel() for n in valid])[real]
    same = np.concatenate(
        [
            (nn["gallery_labels"][np.clip(nn["neighbors"][:, :top], 0, None)] == nn["query_labels"][:, None]).ravel()
            for nn in valid.values()
        ]
    )[real]
    calibration = Calibration.fit(sims, counts, same)
    fused_test = fuse_saved(test, test_kp, train_kp, calibration, cfg, n_jobs, "match test")
    stats = {
        "pairs": int(counts.size + test["neighbors"][:, :top].size),
        "inliers_same_mean": round(float(counts[same].mean()), 3) if same.any() else None,
        "inliers_other_mean": round(float(counts[~same].mean()), 3) if (~same).any() else None,
    }
    return {n: _fused(nn, inl[n], calibration) for n, nn in valid.items()}, fused_test, calibration, stats


def _fused(nn: dict[str, np.ndarray], inliers: np.ndarray, calibration: Calibration) -> dict[str, np.ndarray]:
    out = fuse(Neighbours.saved(nn), inliers, calibration)
    return {**nn, "sims": out.sims, "neighbors": out.neighbors}


def fuse_saved(
    nn: dict[str, np.ndarray],
    query_kp: KeypointSet,
    gallery_kp: KeypointSet,
    calibration: Calibration,
    cfg: LocalConfig,
    n_jobs: int = -1,
    desc: str = "match",
) -> dict[str, np.ndarray]:
    """Match and fuse one saved kNN result with an already fitted calibration (same keys, ``sims``/``neighbors``
    replaced)."""
    return _fused(nn, neighbour_inliers(nn, query_kp, gallery_kp, cfg, n_jobs, desc), calibration)
