"""Benchmark: k-reciprocal re-ranking memory. Ours (sparse encodings, Faiss neighbours, Jaccard only for the
kNN candidates) against the literal full-matrix definition (whaleid.retrieval.rerank.dense_reference) side by side at
1k queries x 1k gallery, then ours alone at 10k x 10k (the full matrix there would be 20k^2 float64 = 3.2 GB per
copy). Peak memory by tracemalloc (numpy and scipy allocations), 128-d clustered vectors, top-50 candidates."""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from bench.common import note, report
from whaleid.retrieval.rerank import dense_reference, k_reciprocal


def data(n_query: int, n_gallery: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.standard_normal((max(5, n_gallery // 3), 128))
    out = []
    for n in (n_query, n_gallery):
        x = centres[rng.integers(0, len(centres), n)] + 0.8 * rng.standard_normal((n, 128))
        out.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return out[0], out[1]


def peak(fn) -> tuple[float, float]:  # noqa: ANN001
    tracemalloc.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top / 2**20, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    q, g = data(args.small, args.small, rng)
    cand = np.argsort(-(q @ g.T), axis=1)[:, :50]
    ours_mb, ours_s = peak(lambda: k_reciprocal(q, g, cand))
    dense_mb, dense_s = peak(lambda: dense_reference(q, g))
    note(
        f"{args.small} x {args.small}: ours {ours_mb:.0f} MiB in {ours_s:.1f} s, full matrix {dense_mb:.0f} MiB in {dense_s:.1f} s"
    )
    report(f"rerank_memory_full_over_ours_{args.small}", dense_mb / ours_mb, "report", True, "{:.1f}")
    q, g = data(args.large, args.large, rng)
    from whaleid.config import KnnConfig
    from whaleid.retrieval.search import search

    _, cand = search(g, q, KnnConfig(k=50))
    ours_mb, ours_s = peak(lambda: k_reciprocal(q, g, cand))
    note(
        f"{args.large} x {args.large}: ours {ours_mb:.0f} MiB in {ours_s:.1f} s (inputs {(q.nbytes + g.nbytes) / 2**20:.0f} MiB)"
    )
    report(f"rerank_peak_mib_{args.large}", ours_mb, "report; < 1 GiB", ours_mb < 1024, "{:.0f}")


if __name__ == "__main__":
    main()
