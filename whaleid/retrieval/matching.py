"""Local features by method (``local.method``, ``local.refine``): describing photos (stage ``keypoints``) and scoring
(query, candidate) pairs (stage ``local``), the one place that knows which method does what.

* ``sift``, ``orb``: geometric matching. Nearest-neighbour descriptor matches are kept by Lowe's ratio test
  (``local.ratio``) and one-to-one, then a RANSAC similarity transform (``cv2.estimateAffinePartial2D``,
  ``local.ransac_px``) counts the matches it explains; a pair's score is its number of inliers. Pairs run in
  parallel (joblib) with a progress bar.
* ``aliked``, ``disk``, ``xfeat``: learned keypoints matched by LightGlue (XFeat: LighterGlue) (:mod:`whaleid.retrieval.learned`).

Each query is matched against its first ``top`` candidates (``local.top_pairs``, or ``local.refine_pairs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from whaleid.config import LocalConfig
from whaleid.core.parallel import map_chunks
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import Box
from whaleid.retrieval.keypoints import BINARY, KeypointSet, detect_all
from whaleid.retrieval.neighbours import Neighbours

LEARNED = (
    "aliked",
    "disk",
    "xfeat",
)  # learned keypoints with LightGlue / LighterGlue (whaleid.retrieval.learned; needs torch)

DESCRIPTOR = "descriptor"  # a frozen backbone's global descriptor (whaleid.model.descriptor), one "keypoint" a photo
MIN_SCALE = 0.25  # a transform shrinking or growing the photo more than 4x is no match (degenerate RANSAC fits)


def match_pair(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    *,
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


def _match_chunk(
    jobs: list[tuple[int, int]], query: KeypointSet, gallery: KeypointSet, cfg: LocalConfig, method: str
) -> list[int]:
    binary = method in BINARY
    return [
        match_pair(query.of(q), gallery.of(g), binary=binary, ratio=cfg.ratio, ransac_px=cfg.ransac_px) for q, g in jobs
    ]


def describe(
    method: str,
    paths: Sequence[Path],
    boxes: dict[str, Box] | None,
    margin: float,
    cfg: LocalConfig,
    *,
    desc: str = "keypoints",
    run: Runtime = Runtime(),
) -> KeypointSet:
    """Local features of every photo in ``paths`` by ``method`` (the frozen ``descriptor`` is a model's:
    :func:`whaleid.gallery.embedding.describe_photos` describes by any method)."""
    if method == DESCRIPTOR:
        raise ValueError("the descriptor is described by whaleid.model.descriptor (gallery.embedding.describe_photos)")
    if method in LEARNED:
        from whaleid.retrieval import learned  # torch: imported only for learned features

        return learned.describe_all(paths, boxes, margin, cfg, method=method, desc=desc, run=run)
    return detect_all(paths, boxes, margin, cfg, method=method, desc=desc, run=run)


def pair_scores(
    method: str,
    query: KeypointSet,
    gallery: KeypointSet,
    query_rows: np.ndarray,
    neighbour_rows: np.ndarray,
    cfg: LocalConfig,
    *,
    top: int,
    desc: str = "match",
    run: Runtime = Runtime(),
) -> np.ndarray:
    """(Q, k) float32 score by ``method`` of query ``query_rows[q]`` and gallery ``neighbour_rows[q, j]`` (rows of
    the keypoint sets) for the first ``top`` neighbours of each query; 0 beyond them and where a row is -1."""
    top = min(top, neighbour_rows.shape[1])
    where = [
        (q, j) for q in range(len(query_rows)) for j in range(top) if neighbour_rows[q, j] >= 0 and query_rows[q] >= 0
    ]
    jobs = [(int(query_rows[q]), int(neighbour_rows[q, j])) for q, j in where]
    if method == DESCRIPTOR:  # one unit descriptor per photo: the pair's cosine
        q_rows, g_rows = (np.array([j[i] for j in jobs], dtype=np.int64) for i in (0, 1))
        q_desc = query.descriptors[query.offsets[q_rows]].astype(np.float32)
        g_desc = gallery.descriptors[gallery.offsets[g_rows]].astype(np.float32)
        scores = (q_desc * g_desc).sum(axis=1) if jobs else np.zeros(0, np.float32)
    elif method in LEARNED:
        from whaleid.retrieval import learned

        scores = learned.match_pairs(query, gallery, jobs, cfg, method=method, desc=desc, run=run)
    else:
        scores = map_chunks(
            _match_chunk,
            jobs,
            query,
            gallery,
            cfg,
            method,
            chunk_size=256,
            n_jobs=run.n_jobs,
            desc=desc,
            unit="pair",
            progress=run.progress,
        )
    out = np.zeros(neighbour_rows.shape, dtype=np.float32)
    for (q, j), c in zip(where, scores, strict=True):
        out[q, j] = c
    return out


def neighbour_scores(
    method: str,
    nn: Neighbours,
    query: KeypointSet,
    gallery: KeypointSet,
    cfg: LocalConfig,
    *,
    top: int,
    desc: str = "match",
    run: Runtime = Runtime(),
) -> np.ndarray:
    """:func:`pair_scores` for a kNN result (its queries and gallery photos found in the keypoint sets by name)."""
    g_rows = gallery.rows_of(nn.gallery_images)
    rows = np.where(nn.valid, g_rows[np.clip(nn.rows, 0, None)], -1)
    return pair_scores(method, query, gallery, query.rows_of(nn.query_images), rows, cfg, top=top, desc=desc, run=run)
