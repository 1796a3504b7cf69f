"""Benchmark: the cost of local-feature matching (stages keypoints and local) at competition scale, per method.

Keypoints are found on real-size inputs (1600x1000 photos, the size of many Happywhale photos, resized to
``local.max_side``), and each pair match runs on those keypoints. Then both are extrapolated to the competition:
79k images to describe, 27,956 test queries (+ the validation fold) to match, on this machine (SIFT and ORB on
every core through joblib; the learned matchers, ALIKED or DISK with LightGlue, on the device: torch's threads on a
CPU, the GPU where there is one). SIFT matches ``--top-pairs`` pairs per query; a learned matcher ``--refine-pairs``
(the cascade ``local.refine`` runs), or ``--top-pairs`` as ``local.method``. Prints seconds per 1k queries, the
whole-competition estimate and the keypoint cache size, per method.

    python -m bench.local [--methods sift aliked disk xfeat] [--max-side 256] [--top-pairs 20] [--refine-pairs 5]
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
from whaleid.retrieval.matching import LEARNED, describe, pair_scores

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


def measure(method: str, paths: list[Path], cfg: LocalConfig, pairs: int, n_queries: int) -> None:
    run = Runtime(n_jobs=-1, progress=False, device="auto")
    start = time.perf_counter()
    kp = describe(method, paths, None, 0.0, cfg, run=run)
    describe_s = (time.perf_counter() - start) / len(paths)
    rng = np.random.default_rng(1)
    queries = np.arange(n_queries)
    rows = rng.integers(0, len(paths), (n_queries, pairs))
    start = time.perf_counter()
    pair_scores(method, kp, kp, queries, rows, cfg, top=pairs, run=run)
    per_query = (time.perf_counter() - start) / n_queries
    bytes_per_image = (kp.points.nbytes + kp.descriptors.nbytes) / len(paths)
    total_min = (IMAGES * describe_s + QUERIES * per_query) / 60
    note(
        f"{method} @ {cfg.max_side} px, {len(kp.points) / len(paths):.0f} keypoints per image on "
        f"{run.torch_device()}, {os.cpu_count()} cores: keypoints {1000 * describe_s:.1f} ms/image (decode of a "
        f"1600x1000 JPEG included), matching {per_query:.3f} s/query ({pairs} pairs, {pairs / per_query:.1f} pairs/s)"
    )
    report(f"local_{method}_seconds_per_1k_queries", 1000 * per_query, "report", True, "{:.0f}")
    report(f"local_{method}_keypoint_cache_mib_competition", IMAGES * bytes_per_image / 2**20, "report", True, "{:.0f}")
    target = TARGET_MIN if method not in LEARNED else 24 * 60.0  # a learned cascade: within a day
    report(f"local_{method}_competition_minutes", total_min, f"< {target:.0f}", total_min < target, "{:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["sift", "aliked", "disk", "xfeat"])
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--top-pairs", type=int, default=LocalConfig().top_pairs, help="pairs per query for SIFT")
    parser.add_argument("--refine-pairs", type=int, default=5, help="pairs per query for a learned matcher")
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--learned-queries", type=int, default=12, help="queries timed for a learned matcher")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = photos(Path(tmp), args.images)
        for method in args.methods:
            cfg = LocalConfig(method=method, max_side=args.max_side, top_pairs=args.top_pairs)
            learned = method in LEARNED
            pairs = args.refine_pairs if learned else args.top_pairs
            measure(method, paths[: 40 if learned else len(paths)], cfg, pairs, args.learned_queries if learned else 40)


if __name__ == "__main__":
    main()
