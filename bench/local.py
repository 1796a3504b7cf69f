"""Benchmark: the cost of local-feature matching (stages keypoints and local) at competition scale.

Keypoints are found on real-size inputs (1600x1000 photos, the size of many Happywhale photos, resized to
``local.max_side``), and each pair match runs on those keypoints. Then both are extrapolated to the competition:
79k images to describe, 27,956 test queries x ``local.top_pairs`` pairs (+ the validation fold) to match, on this
machine's cores (joblib, as the stages run them). Prints seconds per 1k queries, the whole-competition estimate
and the keypoint cache size.

    python -m bench.local [--method sift] [--max-side 256] [--top-pairs 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.common import note, report
from whaleid.config import LocalConfig
from whaleid.core.runtime import Runtime
from whaleid.retrieval.keypoints import detect_all
from whaleid.retrieval.matching import pair_inliers

IMAGES, QUERIES = 79_000, 27_956 + 10_200  # competition: train + test photos; test + one validation fold queries
TARGET_MIN = 60.0  # the whole competition's matching within an hour on this machine


def photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 1600x1000 JPEGs of textured scenes (blobs, strokes, noise)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img = rng.integers(90, 160, (250, 400, 3), dtype=np.uint8)
        for _ in range(150):
            x, y = (int(v) for v in rng.integers(0, 400, 2))
            cv2.circle(img, (x, y % 250), int(rng.integers(2, 10)), [int(c) for c in rng.integers(0, 255, 3)], -1)
        img = cv2.resize(img, (1600, 1000), interpolation=cv2.INTER_CUBIC)
        path = folder / f"{i:04d}.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="sift")
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--top-pairs", type=int, default=20)
    parser.add_argument("--images", type=int, default=120)
    args = parser.parse_args()
    cfg = LocalConfig(method=args.method, max_side=args.max_side, top_pairs=args.top_pairs)
    with tempfile.TemporaryDirectory() as tmp:
        paths = photos(Path(tmp), args.images)
        start = time.perf_counter()
        kp = detect_all(paths, None, 0.0, cfg, run=Runtime(n_jobs=-1), desc="keypoints")
        detect_s = (time.perf_counter() - start) / len(paths)
    rng = np.random.default_rng(1)
    queries = np.arange(40)
    neighbors = rng.integers(0, len(paths), (len(queries), cfg.top_pairs))
    start = time.perf_counter()
    pair_inliers(kp, kp, queries, neighbors, cfg, run=Runtime(n_jobs=-1), desc="match")
    per_query = (time.perf_counter() - start) / len(queries)
    bytes_per_image = (kp.points.nbytes + kp.descriptors.nbytes) / len(paths)
    total_min = (IMAGES * detect_s + QUERIES * per_query) / 60
    note(
        f"{args.method} @ {args.max_side} px, {len(kp.points) / len(paths):.0f} keypoints per image, "
        f"{os.cpu_count()} cores: keypoints {1000 * detect_s:.1f} ms/image (decode of 1600x1000 JPEG included), "
        f"matching {per_query:.3f} s/query ({cfg.top_pairs} pairs)"
    )
    report("local_match_seconds_per_1k_queries", 1000 * per_query, "report", True, "{:.0f}")
    report("local_keypoint_cache_mib_competition", IMAGES * bytes_per_image / 2**20, "report", True, "{:.0f}")
    report("local_competition_minutes", total_min, f"< {TARGET_MIN:.0f}", total_min < TARGET_MIN, "{:.0f}")


if __name__ == "__main__":
    main()
