"""Benchmark: the gallery index at the sizes people meet: exact (flat) against HNSW, IVF-Flat and IVF-PQ, for
galleries of 2,400 (the default) and 51,033 (the competition's training set) vectors of 512 dims, and 1,000,000 with
``--sizes 1000000``.

Per size and index: build time, query time per 1,000 queries (top-50, as the knn stage asks), recall@5 of the
approximate index against the exact top-5 of the same queries, and the index's memory (its serialised size).
Identify latency per photo adds the embedding of one photo to the search (``--embed-ms``, measured by
bench/embed.py for the default model: a few ms on CPU). Vectors are clustered like identity embeddings
(bench/knn.py). ``--sizes`` picks sizes and ``--indexes`` index types (exact search always runs: it is the
reference); HNSW is skipped above ``--hnsw-max`` vectors (its build takes tens of minutes at 1M on 2 cores).
``--nprobe`` / ``--ef-search`` list the search-time settings to measure on one built index (recall against
query time).
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from bench.common import note, report
from whaleid.config import KnnConfig
from whaleid.retrieval.search import build_index

DIM, N_QUERIES, K = 512, 1000, 50


def clustered(n: int, n_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gallery and queries: identities of ~3 photos each, 16% of queries from unseen identities."""
    n_ids = max(5, n // 3)
    centres = rng.standard_normal((n_ids + n_ids // 5 + 1, DIM), dtype=np.float32)
    g_ids = rng.integers(0, n_ids, n)
    q_ids = np.where(
        rng.random(n_queries) < 0.16, rng.integers(n_ids, len(centres), n_queries), rng.integers(0, n_ids, n_queries)
    )
    gallery = centres[g_ids] + 0.9 * rng.standard_normal((n, DIM), dtype=np.float32)
    queries = centres[q_ids] + 0.9 * rng.standard_normal((n_queries, DIM), dtype=np.float32)
    for x in (gallery, queries):
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return gallery, queries


def measure(gallery: np.ndarray, cfg: KnnConfig) -> tuple[float, faiss.Index]:
    start = time.perf_counter()
    index = build_index(gallery, cfg, use_gpu=False)
    return time.perf_counter() - start, index


def search(index: faiss.Index, queries: np.ndarray) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    _, idx = index.search(queries, K)
    return (time.perf_counter() - start) * 1000 / len(queries), idx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[2400, 51033],
        help="gallery sizes (add 1000000 for a million-photo gallery: minutes of build on 2 cores)",
    )
    parser.add_argument("--indexes", nargs="+", default=["flat", "hnsw", "ivf", "ivfpq"])
    parser.add_argument("--hnsw-max", type=int, default=100_000)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[32], help="IVF lists searched (each measured)")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[128], help="HNSW efSearch (each measured)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    note(f"{DIM}-d vectors, {N_QUERIES} queries, top-{K}, {faiss.omp_get_max_threads()} threads, CPU")
    for n in args.sizes:
        gallery, queries = clustered(n, N_QUERIES, rng)
        nlist = int(min(4 * np.sqrt(n), 4096))
        configs = {
            "flat": KnnConfig(k=K, index="flat"),
            "hnsw": KnnConfig(k=K, index="hnsw"),
            "ivf": KnnConfig(k=K, index="ivf", ivf_nlist=nlist, ivf_nprobe=32),
            "ivfpq": KnnConfig(k=K, index="ivfpq", ivf_nlist=nlist, ivf_nprobe=32, pq_m=64),
        }
        _, exact = search(build_index(gallery, configs["flat"], use_gpu=False), queries)
        for name in args.indexes:
            if name == "hnsw" and n > args.hnsw_max:
                note(f"{n}: hnsw skipped (over --hnsw-max {args.hnsw_max})")
                continue
            build, index = measure(gallery, configs[name])
            size = len(faiss.serialize_index(index))
            knobs = {
                "hnsw": ("efSearch", args.ef_search),
                "ivf": ("nprobe", args.nprobe),
                "ivfpq": ("nprobe", args.nprobe),
            }.get(name, ("", [None]))
            for value in knobs[1]:
                if name == "hnsw":
                    index.hnsw.efSearch = value
                elif value is not None:
                    index.nprobe = value
                per_query, idx = search(index, queries)
                hits = sum(len(set(a[:5]) & set(e[:5])) for a, e in zip(idx, exact, strict=True))
                recall = hits / (5 * len(queries))
                label = f"{name}_{n}" + (f"_{knobs[0]}{value}" if value is not None else "")
                print(
                    f"index_{label}: build {build:.1f} s, {per_query * 1000:.0f} ms per 1k queries, recall@5 "
                    f"{recall:.4f}, memory {size / 2**20:.0f} MiB",
                    flush=True,
                )
                if name == "flat":
                    report(f"index_flat_ms_per_query_{n}", per_query, "report", True, "{:.2f}")
                else:
                    report(f"index_{label}_recall_at_5", recall, "report", True, "{:.4f}")


if __name__ == "__main__":
    main()
