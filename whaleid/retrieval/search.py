"""Faiss inner-product kNN. Inputs are L2-normalised float32 (N, d), so inner product = cosine similarity.

Index types (``knn.index``): ``flat`` (exact, ``IndexFlatIP``, default), ``hnsw`` (``IndexHNSWFlat``, graph,
approximate), ``ivf`` (``IndexIVFFlat``, inverted lists, approximate), ``ivfpq`` (``IndexIVFPQ``: inverted lists
of product-quantised vectors, ``knn.pq_m`` bytes each instead of 4 per dimension: for galleries of millions). With
GPUs, flat and IVF indexes move to them (sharded over all of them when there are several); HNSW stays on CPU
(Faiss has no GPU HNSW). Output follows Faiss: (D, I), I = -1 where fewer than k exist.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import faiss
import numpy as np

from whaleid.config import KnnConfig
from whaleid.core.errors import ConfigError

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _flat(d: int, cfg: KnnConfig, gallery: np.ndarray) -> faiss.Index:
    return faiss.IndexFlatIP(d)


def _hnsw(d: int, cfg: KnnConfig, gallery: np.ndarray) -> faiss.Index:
    index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = cfg.hnsw_ef_search
    return index


def _ivf(d: int, cfg: KnnConfig, gallery: np.ndarray) -> faiss.Index:
    nlist = max(1, min(cfg.ivf_nlist, len(gallery) // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(gallery)
    index.nprobe = min(cfg.ivf_nprobe, nlist)
    return index


def _ivfpq(d: int, cfg: KnnConfig, gallery: np.ndarray) -> faiss.Index:
    nlist = max(1, min(cfg.ivf_nlist, len(gallery) // 39))
    m = max(x for x in range(1, min(cfg.pq_m, d) + 1) if d % x == 0)  # sub-vectors must split d evenly
    if m != cfg.pq_m:
        log.info("knn.pq_m %d does not divide the embedding size %d: using %d", cfg.pq_m, d, m)
    nbits = int(np.clip(np.floor(np.log2(max(len(gallery), 2) / 39)), 1, 8))  # 8 bits want 256 * 39 vectors
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.train(gallery)
    index.nprobe = min(cfg.ivf_nprobe, nlist)
    return index


INDEXES = {"flat": _flat, "hnsw": _hnsw, "ivf": _ivf, "ivfpq": _ivfpq}


def build_index(gallery: np.ndarray, cfg: KnnConfig, use_gpu: bool | None = None) -> faiss.Index:
    """Build and fill the index chosen by ``cfg.index``; on GPU when one is present (``use_gpu=None``)."""
    gallery = _as_matrix(gallery, "gallery")
    if cfg.index not in INDEXES:
        raise ConfigError(f"knn.index: unknown Faiss index type {cfg.index!r}; choose from {', '.join(INDEXES)}.")
    index = INDEXES[cfg.index](gallery.shape[1], cfg, gallery)
    if (gpu_available() if use_gpu is None else use_gpu) and cfg.index != "hnsw":
        if faiss.get_num_gpus() > 1:  # every GPU, the gallery split between them
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True
            index = faiss.index_cpu_to_all_gpus(index, options)
        else:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        log.info("Faiss %s index on %d GPU(s)", cfg.index, faiss.get_num_gpus())
    index.add(gallery)
    return index


def search(
    gallery: np.ndarray, queries: np.ndarray, cfg: KnnConfig, use_gpu: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``cfg.k`` gallery rows for every query, best first: (similarities (Q, k), indices (Q, k))."""
    queries = _as_matrix(queries, "queries")
    gallery = _as_matrix(gallery, "gallery")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]} but the gallery has {gallery.shape[1]}")
    k = min(cfg.k, len(gallery))
    index = build_index(gallery, cfg, use_gpu)
    sims, idx = index.search(queries, k)
    return sims.astype(np.float32), idx.astype(np.int64)


def combine(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate unit-length embeddings of several models; rows stay unit length (divided by sqrt(models)), so
    the cosine of two combined rows is the mean of the members' cosines. One model's embeddings are returned as
    they are."""
    if len(parts) == 1:
        return np.asarray(parts[0], dtype=np.float32)
    return (np.concatenate(parts, axis=1) / np.sqrt(len(parts))).astype(np.float32)
