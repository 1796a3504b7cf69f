"""The gallery: the submission's catalogue of known individuals as a self-contained folder, queried by
``whaleid identify`` and grown by ``whaleid gallery add`` without retraining.

A gallery folder (written by stage ``gallery`` as ``gallery/``, and copied anywhere to start a catalogue of your own)
holds:

* ``index.faiss``: the combined embeddings of every gallery photo in a Faiss ``IndexIDMap2`` over the ``knn.index``
  type (flat by default), so photos are added by id; ``embeddings.npz`` keeps the same vectors (removal rebuilds the
  index from them);
* ``photos.csv``: ``id,image,individual_id,sha1`` per photo (``id`` = the Faiss id; ``sha1`` of the file, so the
  same photo is never added twice);
* ``individuals.csv``: ``individual_id,species,trained`` per individual; the row number is the class number the
  models' ArcFace heads use, and individuals added later come after the trained ones (no class centre);
* ``centres/<model>.npz``: each model's class centres, for the kNN + classifier blend;
* ``keypoints.npz``: local features of every gallery photo (when ``local.method`` is not ``none``);
* ``manifest.json``: what a query must be processed with to be comparable: the models (path and SHA-256), image
  size, flip TTA, crop margin, resize format, the ``knn``/``blend``/``local`` settings, the fitted new_individual
  rule and the local-feature calibration.

Querying and adding photos (:mod:`whaleid.gallery.identify`) apply exactly the submission's chain (crop, resize, embed
every model, combine, kNN, blend, local-feature fusion, the rule), so identifying the test photos gives
submission.csv's predictions. This module only reads, writes and searches the folder (stage ``gallery`` needs
nothing more).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from whaleid.config import BlendConfig, KnnConfig, LocalConfig
from whaleid.core.atomic import atomic_dir, load_npz, read_json, save_npz, write_csv, write_json
from whaleid.core.parallel import map_chunks
from whaleid.data.layout import DataError
from whaleid.model.weights import sha256_file
from whaleid.retrieval.blend import Centres, blend_neighbours, mean_cosines
from whaleid.retrieval.local import Calibration, KeypointSet, fuse_saved
from whaleid.retrieval.rerank import rerank_neighbours
from whaleid.retrieval.search import INDEXES, combine
from whaleid.rule.predict import Rule

log = logging.getLogger(__name__)

FORMAT = "whaleid-gallery-1"


def _sha1_chunk(paths: list[Path]) -> list[str]:
    return [hashlib.sha1(p.read_bytes()).hexdigest() for p in paths]


def file_digests(paths: Sequence[Path], n_jobs: int = -1, progress: bool = True) -> list[str]:
    """SHA-1 of every file, in parallel."""
    return map_chunks(_sha1_chunk, list(paths), chunk_size=256, n_jobs=n_jobs, desc="hash photos", progress=progress)


def new_index(dim: int, knn: KnnConfig, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """An ``IndexIDMap2`` over the ``knn.index`` type holding ``vectors`` under ``ids`` (on CPU: it is saved)."""
    inner = INDEXES[knn.index](dim, knn, vectors) if len(vectors) else faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(inner)
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return index


def concat_keypoints(a: KeypointSet, b: KeypointSet) -> KeypointSet:
    return KeypointSet(
        np.concatenate([a.images, b.images]),
        np.concatenate([a.points, b.points]),
        np.concatenate([a.descriptors, b.descriptors]),
        np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]]),
    )


def keypoint_subset(kp: KeypointSet, keep: np.ndarray) -> KeypointSet:
    rows = np.flatnonzero(keep)
    spans = [np.arange(kp.offsets[i], kp.offsets[i + 1]) for i in rows]
    take = np.concatenate(spans) if spans else np.zeros(0, np.int64)
    counts = np.array([len(s) for s in spans], dtype=np.int64)
    return KeypointSet(
        kp.images[rows],
        kp.points[take],
        kp.descriptors[take],
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )


def _checked_file(entry: dict[str, str]) -> Path:
    """``entry['path']``, after checking it still is the file (SHA-256) the gallery was built with."""
    path = Path(entry["path"])
    if not path.is_file():
        raise DataError(
            f"{path}: model file not found; the gallery was built with it (run from the "
            "project folder, or rebuild the gallery with `dvc repro gallery`)."
        )
    if sha256_file(path) != entry["sha256"]:
        raise DataError(
            f"{path} is not the model the gallery was built with (SHA-256 differs): its "
            "embeddings would not be comparable. Rebuild it with `dvc repro gallery`."
        )
    return path


@dataclass
class Gallery:
    """A gallery folder in memory (see the module docstring); :meth:`load` and :meth:`save` read and write it."""

    manifest: dict
    photos: pd.DataFrame  # id, image, individual_id, sha1
    individuals: pd.DataFrame  # individual_id, species, trained (row = class number)
    embeddings: np.ndarray  # (N, D) float32, photos' order
    centres: dict[str, Centres]
    keypoints: KeypointSet | None
    index: faiss.Index

    # --- settings stored in the manifest --------------------------------------------------------------------------
    @property
    def knn(self) -> KnnConfig:
        return KnnConfig(**self.manifest["knn"])

    @property
    def blend(self) -> BlendConfig:
        return BlendConfig(**self.manifest["blend"])

    @property
    def local(self) -> LocalConfig:
        return LocalConfig(**self.manifest["local"])

    @property
    def rule(self) -> Rule:
        return Rule.from_dict(self.manifest["rule"])

    @property
    def labels(self) -> np.ndarray:
        """(N,) class number of every photo."""
        number = {n: i for i, n in enumerate(self.individuals["individual_id"])}
        return self.photos["individual_id"].map(number).to_numpy(dtype=np.int64)

    # --- folder I/O -----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path) -> Gallery:
        root = Path(root)
        if not (root / "manifest.json").is_file():
            raise DataError(f"{root}: not a gallery folder (no manifest.json); build one with `dvc repro gallery`.")
        manifest = read_json(root / "manifest.json")
        if manifest.get("format") != FORMAT:
            raise DataError(f"{root}/manifest.json: not a {FORMAT} gallery (format {manifest.get('format')!r}).")
        photos = pd.read_csv(
            root / "photos.csv", dtype={"image": str, "individual_id": str, "sha1": str}, keep_default_na=False
        )
        individuals = pd.read_csv(
            root / "individuals.csv", dtype={"individual_id": str, "species": str}, keep_default_na=False
        )
        centres = {
            m["name"]: Centres.from_arrays(load_npz(root / "centres" / f"{m['name']}.npz")) for m in manifest["models"]
        }
        kp_file = root / "keypoints.npz"
        keypoints = KeypointSet(**load_npz(kp_file)) if kp_file.is_file() else None
        index = faiss.read_index(str(root / "index.faiss"))
        embeddings = load_npz(root / "embeddings.npz")["embeddings"]
        if index.ntotal != len(photos) or len(embeddings) != len(photos):
            raise DataError(
                f"{root}: index.faiss holds {index.ntotal} vectors, embeddings.npz {len(embeddings)} and "
                f"photos.csv {len(photos)} rows; the folder is damaged, rebuild it."
            )
        return cls(manifest, photos, individuals, embeddings, centres, keypoints, index)

    def save(self, root: str | Path) -> None:
        """Write the whole folder atomically (a reader never sees half of an update)."""
        with atomic_dir(root) as tmp:
            (tmp / "centres").mkdir()
            for name, c in self.centres.items():
                save_npz(tmp / "centres" / f"{name}.npz", **c.arrays())
            if self.keypoints is not None:
                save_npz(tmp / "keypoints.npz", **self.keypoints.arrays())
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            save_npz(tmp / "embeddings.npz", embeddings=self.embeddings)
            write_csv(tmp / "photos.csv", self.photos)
            write_csv(tmp / "individuals.csv", self.individuals)
            write_json(tmp / "manifest.json", self.manifest)

    # --- queries --------------------------------------------------------------------------------------------------
    def check_models(self) -> list[Path]:
        """The model files, after checking each still is the file the gallery was built with."""
        return [_checked_file(m) for m in self.manifest["models"]]

    def check_detector(self) -> Path | None:
        """The box detector's file (stage detect), checked like the models; None if the gallery's photos were not
        cropped by a detector."""
        entry = self.manifest.get("detector")
        return _checked_file(entry) if entry else None

    def search(self, parts: Sequence[np.ndarray], images: Sequence[str]) -> dict[str, np.ndarray]:
        """The submission's kNN + blend for query embeddings ``parts`` (one (Q, d) array per model, manifest order):
        the arrays the knn stage saves (``neighbors`` are rows of :attr:`photos`)."""
        query = combine(list(parts))
        k = min(self.knn.k, len(self.photos))
        if k == 0:
            raise DataError("the gallery holds no photos; add some with `whaleid gallery add`.")
        sims, ids = self.index.search(np.ascontiguousarray(query, dtype=np.float32), k)
        row_of = pd.Series(np.arange(len(self.photos)), index=self.photos["id"].to_numpy())
        rows = np.where(ids >= 0, row_of.reindex(ids.ravel()).fillna(-1).to_numpy(np.int64).reshape(ids.shape), -1)
        sims, rows = rerank_neighbours(query, self.embeddings, sims, rows, self.knn)
        labels = self.labels
        if self.blend.knn_weight < 1.0:
            centre_parts = [(p, self.centres[m["name"]]) for p, m in zip(parts, self.manifest["models"], strict=True)]
            sims, rows = blend_neighbours(
                sims, rows, labels, mean_cosines(centre_parts), self.blend.knn_weight, self.blend.extra_classes
            )
        return {
            "sims": sims.astype(np.float32),
            "neighbors": rows,
            "query_images": np.asarray(images, dtype=str),
            "gallery_labels": labels,
            "gallery_images": self.photos["image"].to_numpy(dtype=str),
        }

    def rank(self, nn: dict[str, np.ndarray], query_kp: KeypointSet | None, n_jobs: int = -1) -> dict[str, np.ndarray]:
        """Fuse local-feature matches (with the saved calibration) when the gallery has keypoints."""
        cal = self.manifest.get("calibration")
        if self.keypoints is None or query_kp is None or not cal:
            return nn
        return fuse_saved(nn, query_kp, self.keypoints, Calibration(**cal), self.local, n_jobs, "match")


def pad_centres(c: Centres, n_classes: int) -> Centres:
    """Centres for ``n_classes`` classes: the added ones have no centre (zero vectors, not trained)."""
    extra = n_classes - c.n_classes
    if extra <= 0:
        return c
    zeros = np.zeros((extra * c.subcenters, c.centres.shape[1]), dtype=c.centres.dtype)
    return Centres(np.concatenate([c.centres, zeros]), c.subcenters, np.concatenate([c.trained, np.zeros(extra, bool)]))


def remove_photos(gallery: Gallery, images: Sequence[str] = (), individuals: Sequence[str] = ()) -> Gallery:
    """``gallery`` without the named photos and every photo of the named individuals (the index is rebuilt from
    the kept vectors). Unknown names are an error; individuals stay listed (their class numbers do not move)."""
    for name, column, what in ((images, "image", "photo"), (individuals, "individual_id", "individual")):
        missing = sorted(set(name) - set(gallery.photos[column]))
        if missing:
            raise DataError(f"no gallery {what} named {missing[0]!r} ({len(missing)} unknown name(s)).")
    drop = (
        gallery.photos["image"].isin(images).to_numpy() | gallery.photos["individual_id"].isin(individuals).to_numpy()
    )
    keep = ~drop
    photos = gallery.photos[keep].reset_index(drop=True)
    vectors = gallery.embeddings[keep]
    index = new_index(vectors.shape[1], gallery.knn, vectors, photos["id"].to_numpy())
    kp = keypoint_subset(gallery.keypoints, keep) if gallery.keypoints is not None else None
    return Gallery(gallery.manifest, photos, gallery.individuals, vectors, gallery.centres, kp, index)
