"""The kNN result every scoring step passes on: each query's nearest gallery photos, best first, with their scores.

One type for the whole chain (search, re-rank, blend, local-feature fusion) and for the rule that consumes it:
the knn, local and pseudo stages save it (``.npz``, no pickle) and the threshold, submit and report stages load
it, checked as an input (:meth:`Neighbours.load` names the file and what is wrong with it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from whaleid.core.atomic import load_npz, save_npz
from whaleid.core.errors import DataError


@dataclass(frozen=True)
class Neighbours:
    """Per query, its ``k`` best gallery photos (``rows``) and their scores (``sims``), best first.

    Attributes:
        sims: (Q, k) float32 scores: cosine, blended or fused probability; ``-inf`` in empty slots.
        rows: (Q, k) int64 gallery row of each neighbour; -1 in empty slots (as Faiss returns).
        gallery_labels: (N,) int64 class number of every gallery row.
        query_labels: (Q,) int64 class numbers of validation queries (None for test photos).
        query_images: (Q,) file names of the queries.
        gallery_images: (N,) file names of the gallery photos.
    """

    sims: np.ndarray
    rows: np.ndarray
    gallery_labels: np.ndarray
    query_labels: np.ndarray | None = None
    query_images: np.ndarray | None = None
    gallery_images: np.ndarray | None = None

    def __post_init__(self) -> None:
        if np.ndim(self.sims) != 2 or np.shape(self.sims) != np.shape(self.rows):
            raise ValueError(f"sims {np.shape(self.sims)} and rows {np.shape(self.rows)} must be one (Q, k) shape")

    def __len__(self) -> int:
        return len(self.sims)

    @property
    def valid(self) -> np.ndarray:
        """(Q, k) True where a slot holds a neighbour."""
        return self.rows >= 0

    def labels(self) -> np.ndarray:
        """(Q, k) class number of each neighbour (-1 in empty slots)."""
        return np.where(self.valid, np.asarray(self.gallery_labels)[np.clip(self.rows, 0, None)], -1)

    def same_individual(self) -> np.ndarray:
        """(Q, k) True where the neighbour shows the query's own individual (validation queries only)."""
        if self.query_labels is None:
            raise ValueError("same_individual needs query_labels (validation queries)")
        return self.valid & (self.labels() == np.asarray(self.query_labels)[:, None])

    def rescored(self, sims: np.ndarray) -> Neighbours:
        """These neighbours with new scores (Q, k), each row re-sorted best first (ties keep the old order)."""
        return self.rescored_with(sims)[0]

    def rescored_with(self, sims: np.ndarray, *extra: np.ndarray) -> tuple[Neighbours, ...]:
        """:meth:`rescored`, and each (Q, k) array of ``extra`` put in the same new order (per-pair scores that
        stay with their pair)."""
        sims = np.where(self.valid, np.asarray(sims, dtype=np.float32), -np.inf).astype(np.float32)
        order = np.argsort(-sims, axis=1, kind="stable")
        nn = replace(self, sims=np.take_along_axis(sims, order, 1), rows=np.take_along_axis(self.rows, order, 1))
        return (nn, *(np.take_along_axis(np.asarray(e), order, 1) for e in extra))

    # --- files ------------------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def save(self, path: str | Path) -> None:
        save_npz(path, **self.arrays())

    @classmethod
    def load(cls, path: str | Path) -> Neighbours:
        """A saved result, checked: the arrays there, of consistent shapes, rows inside the gallery."""
        path = Path(path)
        return cls.from_arrays(load_npz(path), str(path))  # a damaged file: DataError naming it; missing: as is

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], where: str = "neighbours") -> Neighbours:
        missing = [k for k in ("sims", "rows", "gallery_labels") if k not in arrays]
        if missing:
            raise DataError(f"{where}: no {', '.join(missing)} array (written by an older whaleid?); rerun its stage")
        known = {f.name for f in fields(cls)}
        nn = arrays["sims"], arrays["rows"]
        if np.ndim(nn[0]) != 2 or np.shape(nn[0]) != np.shape(nn[1]):
            raise DataError(f"{where}: sims {np.shape(nn[0])} and rows {np.shape(nn[1])} are not one (Q, k) shape")
        q, n = len(nn[0]), len(arrays["gallery_labels"])
        for key, size in (("query_labels", q), ("query_images", q), ("gallery_images", n)):
            if key in arrays and len(arrays[key]) != size:
                raise DataError(f"{where}: {key} has {len(arrays[key])} entries for {size} {key.split('_')[0]} rows")
        rows = np.asarray(nn[1])
        if rows.size and (not np.issubdtype(rows.dtype, np.integer) or rows.max() >= n or rows.min() < -1):
            raise DataError(f"{where}: rows point outside the gallery of {n} photos")
        return cls(**{k: v for k, v in arrays.items() if k in known})
