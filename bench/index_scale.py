"""Benchmark: the gallery index at the sizes people meet: exact (flat) against HNSW, IVF-Flat and IVF-PQ, for
galleries of 2,400 (the default), 51,033 (the competition's training set) and 1,000,000 vectors of 512 dims.

Per size and index: build time, query time per 1,000 queries (top-50, as the knn stage asks), recall@5 of the
approximate index against the exact top-5 of the same queries, and the index's memory (its serialised size).
Identify latency per photo adds the embedding of one photo to the search (``--embed-ms``, measured by
bench/embed.py for the default model: a few ms on CPU). Vectors are clustered like identity embeddings
(bench/knn.py). ``--sizes`` picks sizes; HNSW is skipped above ``--hnsw-max`` vectors (its build takes tens of
minutes at 1M on 2 cores).
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from bench.common import note, report
from whaleid.config import KnnConfig
from whaleid.retrieval import build_index

DIM, N_QUERIES, K = 512, 1000, 50


def clustered(n: int, n_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gallery and queries: identities of ~3 photos each, 16% of queries from unseen identities."""
    n_ids = max(5, n // 3)
    centres = rng.standard_normal((n_ids + n_ids // 5 + 1, DIM), dtype=np.float32)
    g_ids = rng.integers(0, n_ids, n)
    q_ids = np.where(rng.random(n_queries) < 0.16, rng.integers(n_ids, len(centres), n_queries),
                     rng.integers(0, n_ids, n_queries))  # fmt: skip
    gallery = centres[g_ids] + 0.9 * rng.standard_normal((n, DIM), dtype=np.float32)
    queries = centres[q_ids] + 0.9 * rng.standard_normal((n_queries, DIM), dtype=np.float32)
    for x in (gallery, queries):
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return gallery, queries


def measure(gallery: np.ndarray, queries: np.ndarray, cfg: KnnConfig) -> tuple[float, float, np.ndarray, int]:
    start = time.perf_counter()
    index = build_index(gallery, cfg, use_gpu=False)
    build = time.perf_counter() - start
    start = time.perf_counter()
    _, idx = index.search(queries, K)
    query = (time.perf_counter() - start) * 1000 / len(queries)
    return build, query, idx, len(faiss.serialize_index(index))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2400, 51033, 1_000_000])
    parser.add_argument("--hnsw-max", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    note(f"{DIM}-d vectors, {N_QUERIES} queries, top-{K}, {faiss.omp_get_max_threads()} threads, CPU")
    for n in args.sizes:
        gallery, queries = clustered(n, N_QUERIES, rng)
        nlist = int(min(4 * np.sqrt(n), 4096))
        configs = {"flat": KnnConfig(k=K, index="flat"),
                   "hnsw": KnnConfig(k=K, index="hnsw"),
                   "ivf": KnnConfig(k=K, index="ivf", ivf_nlist=nlist, ivf_nprobe=32),
                   "ivfpq": KnnConfig(k=K, index="ivfpq", ivf_nlist=nlist, ivf_nprobe=32, pq_m=64)}  # fmt: skip
        exact = None
        for name, cfg in configs.items():
            if name == "hnsw" and n > args.hnsw_max:
                note(f"{n}: hnsw skipped (over --hnsw-max {args.hnsw_max})")
                continue
            build, per_query, idx, size = measure(gallery, queries, cfg)
            if exact is None:
                exact = idx
            hits = sum(len(set(a[:5]) & set(e[:5])) for a, e in zip(idx, exact, strict=True))
            recall = hits / (5 * len(queries))
            print(f"index_{name}_{n}: build {build:.1f} s, {per_query * 1000:.0f} ms per 1k queries, recall@5 "
                  f"{recall:.4f}, memory {size / 2**20:.0f} MiB", flush=True)  # fmt: skip
            if name == "flat":
                report(f"index_flat_ms_per_query_{n}", per_query, "report", True, "{:.2f}")
            else:
                report(f"index_{name}_recall_at_5_{n}", recall, "report", True, "{:.4f}")


if __name__ == "__main__":
    main()
