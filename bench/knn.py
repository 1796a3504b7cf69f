"""Benchmark: exact `IndexFlatIP` against HNSW for 27,956 queries x 512 dims over 51,033 gallery vectors on CPU:
search time and HNSW's recall@5 against the exact top-5. Exact stays the default unless recall@5 >= 0.999.

The vectors are clustered like identity embeddings (15,587 identities, a few images each, plus unseen
queries), since uniformly random vectors would say little about real recall.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from bench.common import note, report
from whaleid.config import KnnConfig
from whaleid.retrieval.search import search

Q, N_GALLERY, DIM, N_IDS = 27956, 51033, 512, 15587


def clustered(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.standard_normal((N_IDS + 5000, DIM)).astype(np.float32)
    g_ids = rng.integers(0, N_IDS, N_GALLERY)
    q_ids = np.where(rng.random(Q) < 0.16, rng.integers(N_IDS, N_IDS + 5000, Q), rng.integers(0, N_IDS, Q))
    gallery = centres[g_ids] + 0.9 * rng.standard_normal((N_GALLERY, DIM)).astype(np.float32)
    queries = centres[q_ids] + 0.9 * rng.standard_normal((Q, DIM)).astype(np.float32)
    for x in (gallery, queries):
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return gallery, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ef-search", type=int, default=KnnConfig().hnsw_ef_search)
    parser.add_argument("--m", type=int, default=KnnConfig().hnsw_m)
    args = parser.parse_args()
    gallery, queries = clustered(np.random.default_rng(0))
    start = time.perf_counter()
    _, exact = search(gallery, queries, KnnConfig(k=50, index="flat"))
    flat_s = time.perf_counter() - start
    start = time.perf_counter()
    _, approx = search(gallery, queries, KnnConfig(k=50, index="hnsw", hnsw_m=args.m, hnsw_ef_search=args.ef_search))
    hnsw_s = time.perf_counter() - start
    hits = sum(len(set(a[:5]) & set(e[:5])) for a, e in zip(approx, exact, strict=True))
    recall = hits / (5 * Q)
    note(
        f"{Q} x {DIM} queries vs {N_GALLERY} gallery, top-50, {faiss.omp_get_max_threads()} threads: "
        f"flat {flat_s:.1f} s, HNSW (M={args.m}, efSearch={args.ef_search}, build included) {hnsw_s:.1f} s"
    )
    report("knn_flat_seconds", flat_s, "report", True, "{:.1f}")
    report("knn_hnsw_seconds", hnsw_s, "report", True, "{:.1f}")
    # PASS: the default follows the rule (exact unless HNSW reaches 0.999 recall@5).
    rule_kept = KnnConfig().index == "flat" or recall >= 0.999
    report("knn_hnsw_recall_at_5", recall, "report; HNSW may be the default only if >= 0.999", rule_kept, "{:.4f}")
    note(f"default knn.index: {KnnConfig().index} ({'HNSW could replace it' if recall >= 0.999 else 'kept exact'})")


if __name__ == "__main__":
    main()
