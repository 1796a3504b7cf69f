"""Benchmark: the vectorised threshold sweep against the straightforward per-image reference (the naive loop the
tests check it with) on 27,956 queries x 50 neighbours x 11 thresholds. Targets: >= 100x, and < 2 s on its own.
Both compute per-query precision@5 for every threshold from the same neighbours; the results are compared.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.common import ROOT, note, report
from whaleid.rule.candidates import most_frequent, top_candidates
from whaleid.rule.metrics import precision_at_5
from whaleid.rule.predict import sweep_scores

sys.path.insert(0, str(ROOT / "tests"))
from references import naive_predictions  # noqa: E402 - the tests' reference implementation (tests/references.py)

Q, K, N_GALLERY, N_CLASSES = 27956, 50, 51033, 15587


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-queries", type=int, default=Q, help="queries for the naive loop (default: all)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    gallery_labels = rng.integers(0, N_CLASSES, N_GALLERY)
    neighbors = rng.integers(0, N_GALLERY, (Q, K))
    sims = np.ascontiguousarray(np.sort(rng.uniform(0.0, 1.0, (Q, K)).astype(np.float32), axis=1)[:, ::-1])
    truth = np.where(rng.random(Q) < 0.16, -1, gallery_labels[neighbors[:, 0]])
    thresholds = np.round(np.linspace(0.0, 1.0, 11), 2)

    def vectorised() -> np.ndarray:
        labels, scores = top_candidates(sims, neighbors, gallery_labels, most_frequent(gallery_labels))
        return sweep_scores(labels, scores, truth, thresholds)

    times = []
    for _ in range(5):  # the median of 5: the first call also pays for page faults of fresh arrays
        start = time.perf_counter()
        fast = vectorised()
        times.append(time.perf_counter() - start)
    fast_s = float(np.median(times))
    fill = most_frequent(gallery_labels)

    n = args.naive_queries
    start = time.perf_counter()
    naive = np.empty((n, len(thresholds)))
    for j, thr in enumerate(thresholds):
        preds = naive_predictions(sims[:n], neighbors[:n], gallery_labels, fill, thr)
        naive[:, j] = [precision_at_5(p, t) for p, t in zip(preds, truth[:n], strict=True)]
    naive_s = (time.perf_counter() - start) * Q / n
    np.testing.assert_allclose(fast[:n], naive)
    note(
        f"{Q} x {K} x {len(thresholds)}: vectorised {fast_s:.2f} s, naive {naive_s:.1f} s"
        f"{'' if n == Q else f' (timed on {n} queries, scaled)'}; results identical"
    )
    report("sweep_speedup", naive_s / fast_s, ">= 100x", naive_s / fast_s >= 100, "{:.0f}x")
    report("sweep_seconds", fast_s, "< 2 s", fast_s < 2.0, "{:.2f}")


if __name__ == "__main__":
    main()
