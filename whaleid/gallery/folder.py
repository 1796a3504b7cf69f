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
* ``keypoints.<method>.npz``: local features of every gallery photo, for each method ``local.method`` and
  ``local.refine`` name (``keypoints.npz``: the one method of galleries written before);
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
from whaleid.core.atomic import (
    atomic_dir,
    load_npz,
    read_json,
    restore_swap,
    save_npz,
    write_csv,
    write_json,
)
from whaleid.core.errors import DataError
from whaleid.core.parallel import map_chunks
from whaleid.core.runtime import Runtime
from whaleid.gallery.files import damaged, read_table
from whaleid.model.weights import sha256_file
from whaleid.retrieval.blend import Centres
from whaleid.retrieval.chain import Photos, ScoringChain, Searcher
from whaleid.retrieval.fusion import Calibration
from whaleid.retrieval.keypoints import KeypointSet
from whaleid.retrieval.neighbours import Neighbours
from whaleid.retrieval.search import INDEXES, combine
from whaleid.rule.predict import Rule

log = logging.getLogger(__name__)

FORMAT = "whaleid-gallery-1"
MANIFEST_KEYS = ("models", "img_size", "flip_tta", "crop_margin", "resize_format", "knn", "blend", "local", "rule")


def _sha1_chunk(paths: list[Path]) -> list[str]:
    return [hashlib.sha1(p.read_bytes()).hexdigest() for p in paths]


def file_digests(paths: Sequence[Path], run: Runtime = Runtime()) -> list[str]:
    """SHA-1 of every file, in parallel."""
    return map_chunks(
        _sha1_chunk, list(paths), chunk_size=256, n_jobs=run.n_jobs, desc="hash photos", progress=run.progress
    )


def new_index(dim: int, knn: KnnConfig, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """An ``IndexIDMap2`` over the ``knn.index`` type holding ``vectors`` under ``ids`` (on CPU: it is saved)."""
    inner = INDEXES[knn.index](dim, knn, vectors) if len(vectors) else faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(inner)
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return index


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
    keypoints: dict[str, KeypointSet]  # by local-feature method; empty without local features
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
        return Rule.from_dict(self.manifest["rule"], "manifest.json")

    @property
    def labels(self) -> np.ndarray:
        """(N,) class number of every photo."""
        number = {n: i for i, n in enumerate(self.individuals["individual_id"])}
        return self.photos["individual_id"].map(number).to_numpy(dtype=np.int64)

    # --- folder I/O -----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path) -> Gallery:
        root = Path(root)
        restore_swap(root)  # a write killed between the two renames of its folder swap: read the old gallery
        if not (root / "manifest.json").is_file():
            raise DataError(f"{root}: not a gallery folder (no manifest.json); build one with `dvc repro gallery`.")
        with damaged(root / "manifest.json"):
            manifest = read_json(root / "manifest.json")
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
                raise DataError(f"{root}/manifest.json: not a {FORMAT} gallery (format {found!r}).")
            missing = [key for key in MANIFEST_KEYS if key not in manifest]
            if missing:
                raise ValueError(f"no {', '.join(missing)}")
            if not isinstance(manifest["models"], list) or not all(
                isinstance(m, dict) and isinstance(m.get("name"), str) for m in manifest["models"]
            ):
                raise ValueError("models must be a list of {name, path, sha256} entries")
            KnnConfig(**manifest["knn"]), BlendConfig(**manifest["blend"]), LocalConfig(**manifest["local"])
            Rule.from_dict(manifest["rule"], f"{root}/manifest.json")
            if manifest.get("calibration"):
                Calibration.from_dict(manifest["calibration"])
            size = manifest["img_size"]
            if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 4096:
                raise ValueError(f"img_size must be a whole number of pixels in [8, 4096], got {size!r:.40}")
        photos = read_table(root / "photos.csv", {"id": None, "image": str, "individual_id": str, "sha1": str})
        individuals = read_table(root / "individuals.csv", {"individual_id": str, "species": str})
        centres = {}
        for m in manifest["models"]:
            with damaged(root / "centres" / f"{m['name']}.npz"):
                centres[m["name"]] = Centres.from_arrays(load_npz(root / "centres" / f"{m['name']}.npz"))
        keypoints = {}
        for method in LocalConfig(**manifest["local"]).methods:
            kp_file = root / f"keypoints.{method}.npz"
            if not kp_file.is_file() and method == manifest["local"]["method"]:
                kp_file = root / "keypoints.npz"  # a gallery written before keypoints were kept per method
            if kp_file.is_file():
                with damaged(kp_file):
                    keypoints[method] = KeypointSet(**load_npz(kp_file))
        with damaged(root / "index.faiss"):
            index = faiss.read_index(str(root / "index.faiss"))
        with damaged(root / "embeddings.npz"):
            embeddings = load_npz(root / "embeddings.npz")["embeddings"]
            if embeddings.ndim != 2 or embeddings.dtype != np.float32 or not np.isfinite(embeddings).all():
                raise ValueError(f"embeddings must be finite float32 rows, got {embeddings.dtype} {embeddings.shape}")
        if index.ntotal != len(photos) or len(embeddings) != len(photos):
            raise DataError(
                f"{root}: index.faiss holds {index.ntotal} vectors, embeddings.npz {len(embeddings)} and "
                f"photos.csv {len(photos)} rows; the folder is damaged, rebuild it."
            )
        unknown = sorted(set(photos["individual_id"]) - set(individuals["individual_id"]))
        if unknown:
            raise DataError(f"{root}/photos.csv: individual_id {unknown[0]!r} is not in individuals.csv; rebuild it.")
        return cls(manifest, photos, individuals, embeddings, centres, keypoints, index)

    def save(self, root: str | Path) -> None:
        """Write the whole folder atomically (a reader never sees half of an update)."""
        with atomic_dir(root) as tmp:
            (tmp / "centres").mkdir()
            for name, c in self.centres.items():
                save_npz(tmp / "centres" / f"{name}.npz", **c.arrays())
            for method, kp in self.keypoints.items():
                save_npz(tmp / f"keypoints.{method}.npz", **kp.arrays())
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

    def _centres_of_present(self, c: Centres) -> Centres:
        """``c`` with the centres of individuals that have no photo left switched off: a removed individual is
        never predicted through its ArcFace centre. Its row stays (class numbers do not move), so adding its photos
        back restores it as it was."""
        gone = _without_photos(self)[: c.n_classes]
        return c if not gone.any() else Centres(c.centres, c.subcenters, c.trained & ~gone)

    def photos_for_search(self) -> Photos:
        """The gallery's photos as the scoring chain compares them (their combined embeddings and class numbers)."""
        return Photos(self.embeddings, self.photos["image"].to_numpy(dtype=str), self.labels)

    def searcher(self) -> Searcher:
        """Search through the saved index; its ids mapped back to rows of :attr:`photos`."""
        row_of = pd.Series(np.arange(len(self.photos)), index=self.photos["id"].to_numpy())

        def run(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            sims, ids = self.index.search(queries, k)
            rows = row_of.reindex(ids.ravel()).fillna(-1).to_numpy(np.int64).reshape(ids.shape)
            return sims, np.where(ids >= 0, rows, -1)

        return run

    def score(
        self,
        parts: Sequence[np.ndarray],
        images: Sequence[str],
        query_kp: dict[str, KeypointSet] | None = None,
        run: Runtime = Runtime(),
    ) -> Neighbours:
        """The submission's scoring chain for query embeddings ``parts`` (one (Q, d) array per model, manifest
        order) of photos ``images``, with the saved calibration and the gallery's keypoints: ``rows`` of the result
        are rows of :attr:`photos`."""
        return self.score_with_inliers(parts, images, query_kp, run)[0]

    def score_with_inliers(
        self,
        parts: Sequence[np.ndarray],
        images: Sequence[str],
        query_kp: dict[str, KeypointSet] | None = None,
        run: Runtime = Runtime(),
    ) -> tuple[Neighbours, np.ndarray | None]:
        """:meth:`score`, and the raw local match score of each (query, neighbour) pair, NaN where not matched
        (None without local features)."""
        if len(self.photos) == 0:
            raise DataError("the gallery holds no photos; add some with `whaleid gallery add`.")
        query = Photos(combine(list(parts)), np.asarray(images, dtype=str), np.full(len(images), -1), tuple(parts))
        chain = ScoringChain(self.knn, self.blend, self.local, run=run)
        cal = self.manifest.get("calibration")
        return chain.score(
            query,
            self.photos_for_search(),
            centres=[self._centres_of_present(self.centres[m["name"]]) for m in self.manifest["models"]],
            searcher=self.searcher(),
            calibration=Calibration.from_dict(cal, "gallery manifest.json calibration") if cal else None,
            query_kp=query_kp,
            gallery_kp=self.keypoints,
        )


def _without_photos(gallery: Gallery) -> np.ndarray:
    """(C,) True for the listed individuals that have no photo left (all removed by `gallery remove`)."""
    return ~gallery.individuals["individual_id"].isin(gallery.photos["individual_id"]).to_numpy()


def pad_centres(c: Centres, n_classes: int) -> Centres:
    """Centres for ``n_classes`` classes: the added ones have no centre (zero vectors, not trained)."""
    extra = n_classes - c.n_classes
    if extra <= 0:
        return c
    zeros = np.zeros((extra * c.subcenters, c.centres.shape[1]), dtype=c.centres.dtype)
    return Centres(np.concatenate([c.centres, zeros]), c.subcenters, np.concatenate([c.trained, np.zeros(extra, bool)]))


def remove_photos(gallery: Gallery, images: Sequence[str] = (), individuals: Sequence[str] = ()) -> Gallery:
    """``gallery`` without the named photos and every photo of the named individuals (the index is rebuilt from
    the kept vectors). Unknown names are an error. Individuals stay listed (their class numbers do not move) but
    one left with no photo is never predicted (:meth:`Gallery.score` switches its centres off) nor counted."""
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
    kp = {method: k.subset(keep) for method, k in gallery.keypoints.items()}
    return Gallery(gallery.manifest, photos, gallery.individuals, vectors, gallery.centres, kp, index)
