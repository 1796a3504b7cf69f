"""kNN + classifier blend: a second score per candidate from the ArcFace head, as the Happywhale winners did
(``knn * r + logit * (1 - r)``).

A model's *class cosines* are the cosines of a query embedding to every class centre of its ArcFace head (the best
of a class's sub-centres), counted only for the classes that model trained on: a centre of a class it never saw
(validation-only or held-out individuals) is its random initialisation and says nothing. With several models
(an ensemble) a class's cosine is the mean over the models that trained on it.

:func:`blend_neighbours` rewrites the kNN results: each neighbour's similarity becomes
``w * sim + (1 - w) * class cosine of its individual`` (``w`` = ``blend.knn_weight``; when no model trained on that
individual, its class cosine is estimated as ``sim`` plus the query's mean gap between class cosine and ``sim``
over its neighbours of trained individuals), and the ``extra`` classes with the highest class cosine that none of the
top-k neighbours shows are added as candidates, scored with the row's lowest kNN similarity as their kNN part and
pointing at one gallery photo of the class. Rows are re-sorted best first, so the prediction rule, the local
feature fusion and the threshold sweep all see the blended score. Memory is bounded: class cosines are made for
``chunk`` queries at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Centres:
    """One model's ArcFace centres, L2-normalised: ``centres`` (C * subcenters, d), ``trained`` (C,) bool."""

    centres: np.ndarray
    subcenters: int
    trained: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.trained)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Centres:
        """From the arrays of an embed stage's ``centres.npz``."""
        return cls(arrays["centres"], int(arrays["subcenters"]), np.asarray(arrays["trained"], dtype=bool))

    @classmethod
    def of_model(cls, head: object, trained: np.ndarray) -> Centres:
        """From an :class:`whaleid.model.heads.ArcFace` head and the (C,) classes its model trained on."""
        import torch

        weight = torch.nn.functional.normalize(head.weight.detach().float().cpu(), dim=1).numpy()
        return cls(weight, int(head.subcenters), np.asarray(trained, dtype=bool))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"centres": self.centres, "subcenters": np.int64(self.subcenters), "trained": self.trained}

    def cosines(self, queries: np.ndarray) -> np.ndarray:
        """(Q, C) float32 class cosines of unit-length ``queries``; NaN for classes the model did not train on."""
        cos = np.asarray(queries, dtype=np.float32) @ self.centres.T
        if self.subcenters > 1:
            cos = cos.reshape(len(cos), self.n_classes, self.subcenters).max(axis=2)
        cos[:, ~self.trained] = np.nan
        return cos


def mean_cosines(parts: Sequence[tuple[np.ndarray, Centres]]) -> Callable[[slice], np.ndarray]:
    """A function giving, for a slice of query rows, the (q, C) mean class cosine over the models
    ``(query embeddings of that model, its centres)`` that trained on each class (NaN where none did)."""
    n_classes = {c.n_classes for _, c in parts}
    if len(n_classes) != 1:
        raise ValueError(f"the models disagree on the number of classes: {sorted(n_classes)}")

    def rows(sl: slice) -> np.ndarray:
        total = count = None
        for queries, centres in parts:
            cos = centres.cosines(queries[sl])
            seen = ~np.isnan(cos)
            cos = np.where(seen, cos, 0.0)
            total = cos if total is None else total + cos
            count = seen.astype(np.float32) if count is None else count + seen
        with np.errstate(invalid="ignore", divide="ignore"):
            return (total / count).astype(np.float32)

    return rows


def blend_neighbours(
    sims: np.ndarray,
    gallery_rows: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    class_cosines: Callable[[slice], np.ndarray],
    knn_weight: float,
    extra: int = 5,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend kNN similarities with class cosines (see the module docstring).

    Args:
        sims, gallery_rows: (Q, k) kNN results (gallery_rows -1 = none, as Faiss returns).
        gallery_labels: (N,) class number of every gallery row.
        class_cosines: rows slice -> (q, C) class cosines, NaN for untrained classes (:func:`mean_cosines`).
        knn_weight: ``w`` in ``w * sim + (1 - w) * cosine``.
        extra: classes added per query from the class cosines when no neighbour shows them.
        chunk: queries per block of class cosines.

    Returns:
        (Q, k + extra) blended scores and gallery rows, best first; unused slots score -inf with row -1.
    """
    sims = np.asarray(sims, dtype=np.float32)
    gallery_rows = np.asarray(gallery_rows, dtype=np.int64)
    gallery_labels = np.asarray(gallery_labels, dtype=np.int64)
    q, k = sims.shape
    out_sims = np.full((q, k + extra), -np.inf, dtype=np.float32)
    out_rows = np.full((q, k + extra), -1, dtype=np.int64)
    first_row = None
    for start in range(0, q, chunk):
        sl = slice(start, min(start + chunk, q))
        cos = class_cosines(sl)
        if first_row is None:  # one gallery photo per class (its first row) for added candidates; -1: none
            first_row = np.full(cos.shape[1], -1, dtype=np.int64)
            first_row[gallery_labels[::-1]] = np.arange(len(gallery_labels) - 1, -1, -1)
        s, nb = sims[sl], gallery_rows[sl]
        valid = nb >= 0
        labels = np.where(valid, gallery_labels[np.clip(nb, 0, None)], 0)
        lcos = np.take_along_axis(cos, labels, 1)
        known = valid & ~np.isnan(lcos)
        # A class no model trained on has no centre: its cosine is taken as its kNN similarity plus the query's mean
        # (centre cosine - kNN similarity) over its neighbours of trained classes, so that both kinds of class
        # stay on one scale (the plain similarity would rank untrained classes above trained ones whenever centre
        # cosines run lower than kNN similarities, as they do).
        gap = np.where(known, np.nan_to_num(lcos) - s, 0.0)
        n_known = known.sum(axis=1, keepdims=True)
        offset = np.where(n_known > 0, gap.sum(axis=1, keepdims=True) / np.maximum(n_known, 1), 0.0)
        lcos = np.where(known, np.nan_to_num(lcos), s + offset)
        blended = knn_weight * s + (1.0 - knn_weight) * lcos
        blended = np.where(valid, blended, -np.inf)
        add_s = np.full((len(s), extra), -np.inf, dtype=np.float32)
        add_r = np.full((len(s), extra), -1, dtype=np.int64)
        n_extra = min(extra, cos.shape[1])
        if n_extra:
            cand = np.where(np.isnan(cos) | (first_row < 0), -np.inf, cos)
            rows = np.broadcast_to(np.arange(len(s))[:, None], labels.shape)
            cand[rows[valid], labels[valid]] = -np.inf  # already a candidate through a neighbour
            top = np.argpartition(-cand, n_extra - 1, axis=1)[:, :n_extra]
            top_cos = np.take_along_axis(cand, top, 1)
            floor = np.where(valid, s, np.inf).min(axis=1)
            floor = np.where(np.isfinite(floor), floor, 0.0)[:, None]
            ok = np.isfinite(top_cos)
            add_s[:, :n_extra] = np.where(ok, knn_weight * floor + (1.0 - knn_weight) * top_cos, -np.inf)
            add_r[:, :n_extra] = np.where(ok, first_row[top], -1)
        both_s = np.concatenate([blended, add_s], axis=1)
        both_r = np.concatenate([np.where(valid, nb, -1), add_r], axis=1)
        order = np.argsort(-both_s, axis=1, kind="stable")
        out_sims[sl] = np.take_along_axis(both_s, order, 1)
        out_rows[sl] = np.take_along_axis(both_r, order, 1)
    return out_sims, out_rows
