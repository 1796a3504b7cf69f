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

Querying applies exactly the submission's chain (crop, resize, embed every model, combine, kNN, blend, local
feature fusion, the rule), so identifying the test photos gives submission.csv's predictions.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from whaleid.blend import Centres, blend_neighbours, mean_cosines
from whaleid.config import BlendConfig, KnnConfig, LocalConfig
from whaleid.data import NEW_INDIVIDUAL, DataError, check_images
from whaleid.io import atomic_dir, load_npz, read_json, save_npz, write_csv, write_json
from whaleid.local import Calibration, KeypointSet, detect_all, fuse_saved
from whaleid.parallel import map_chunks
from whaleid.predict import NEW, Rule, apply_rule, candidates
from whaleid.prepare import Box, resize_split, resized_name
from whaleid.retrieval import INDEXES, combine

log = logging.getLogger(__name__)

FORMAT = "whaleid-gallery-1"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def _concat_keypoints(a: KeypointSet, b: KeypointSet) -> KeypointSet:
    return KeypointSet(np.concatenate([a.images, b.images]), np.concatenate([a.points, b.points]),
                       np.concatenate([a.descriptors, b.descriptors]),
                       np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]]))  # fmt: skip


def _keypoint_subset(kp: KeypointSet, keep: np.ndarray) -> KeypointSet:
    rows = np.flatnonzero(keep)
    spans = [np.arange(kp.offsets[i], kp.offsets[i + 1]) for i in rows]
    take = np.concatenate(spans) if spans else np.zeros(0, np.int64)
    counts = np.array([len(s) for s in spans], dtype=np.int64)
    return KeypointSet(kp.images[rows], kp.points[take], kp.descriptors[take],
                       np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))  # fmt: skip


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
        photos = pd.read_csv(root / "photos.csv", dtype={"image": str, "individual_id": str, "sha1": str},
                             keep_default_na=False)  # fmt: skip
        individuals = pd.read_csv(root / "individuals.csv", dtype={"individual_id": str, "species": str},
                                  keep_default_na=False)  # fmt: skip
        centres = {m["name"]: Centres.from_arrays(load_npz(root / "centres" / f"{m['name']}.npz"))
                   for m in manifest["models"]}  # fmt: skip
        kp_file = root / "keypoints.npz"
        keypoints = KeypointSet(**load_npz(kp_file)) if kp_file.is_file() else None
        index = faiss.read_index(str(root / "index.faiss"))
        embeddings = load_npz(root / "embeddings.npz")["embeddings"]
        if index.ntotal != len(photos) or len(embeddings) != len(photos):
            raise DataError(f"{root}: index.faiss holds {index.ntotal} vectors, embeddings.npz {len(embeddings)} and "
                            f"photos.csv {len(photos)} rows; the folder is damaged, rebuild it.")  # fmt: skip
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
        paths = []
        for m in self.manifest["models"]:
            path = Path(m["path"])
            if not path.is_file():
                raise DataError(f"{path}: model file not found; the gallery was built with it (run from the "
                                "project folder, or rebuild the gallery with `dvc repro gallery`).")  # fmt: skip
            if sha256_file(path) != m["sha256"]:
                raise DataError(f"{path} is not the model the gallery was built with (SHA-256 differs): its "
                                "embeddings would not be comparable. Rebuild it with `dvc repro gallery`.")  # fmt: skip
            paths.append(path)
        return paths

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
        labels = self.labels
        if self.blend.knn_weight < 1.0:
            centre_parts = [(p, self.centres[m["name"]]) for p, m in zip(parts, self.manifest["models"], strict=True)]
            sims, rows = blend_neighbours(sims, rows, labels, mean_cosines(centre_parts), self.blend.knn_weight,
                                          self.blend.extra_classes)  # fmt: skip
        return {"sims": sims.astype(np.float32), "neighbors": rows, "query_images": np.asarray(images, dtype=str),
                "gallery_labels": labels, "gallery_images": self.photos["image"].to_numpy(dtype=str)}  # fmt: skip

    def rank(self, nn: dict[str, np.ndarray], query_kp: KeypointSet | None, n_jobs: int = -1) -> dict[str, np.ndarray]:
        """Fuse local-feature matches (with the saved calibration) when the gallery has keypoints."""
        cal = self.manifest.get("calibration")
        if self.keypoints is None or query_kp is None or not cal:
            return nn
        return fuse_saved(nn, query_kp, self.keypoints, Calibration(**cal), self.local, n_jobs, "match")


def _exported_parts(gallery: Gallery, exported: Sequence[Path], resized: Sequence[Path],
                    batch_size: int) -> list[np.ndarray]:  # fmt: skip
    """Embeddings by files `whaleid export` wrote, one per gallery model (same order), checked against the
    manifest: the same source model (SHA-256), input size and flip TTA."""
    from whaleid.data import read_image
    from whaleid.export import ExportedEmbedder

    models = gallery.manifest["models"]
    if len(exported) != len(models):
        raise DataError(f"--exported: {len(exported)} file(s) for a gallery of {len(models)} model(s) "
                        f"({', '.join(m['path'] for m in models)}); give one per model, in that order.")  # fmt: skip
    parts = []
    for path, m in zip(exported, models, strict=True):
        run = ExportedEmbedder(path)
        want = {"model_sha256": m["sha256"], "img_size": gallery.manifest["img_size"],
                "flip_tta": gallery.manifest["flip_tta"]}  # fmt: skip
        got = {k: run.meta.get(k) for k in want}
        if got != want:
            bad = next(k for k in want if got[k] != want[k])
            raise DataError(f"{path} was exported with {bad} {got[bad]!r}, but the gallery's {m['path']} needs "
                            f"{want[bad]!r}: `whaleid export {m['path']} ...` again.")  # fmt: skip
        rows = [run(np.stack([read_image(p) for p in resized[i : i + batch_size]]))
                for i in range(0, len(resized), batch_size)]  # fmt: skip
        parts.append(np.concatenate(rows).astype(np.float32))
    return parts


def embed_photos(gallery: Gallery, paths: Sequence[Path], boxes: dict[str, Box] | None, workdir: Path,
                 device: object, batch_size: int = 64, progress: bool = True, n_jobs: int = -1,
                 exported: Sequence[Path] | None = None) -> tuple[list[np.ndarray], KeypointSet | None]:  # fmt: skip
    """Each model's embeddings of ``paths`` (cropped, resized and embedded exactly as the pipeline does; by the
    ``exported`` files instead of the PyTorch models when given), and their keypoints when the gallery uses
    local features."""
    m = gallery.manifest
    fmt = m["resize_format"]
    resize_split(paths, workdir, workdir / ".cache", m["img_size"], boxes, m["crop_margin"], fmt, n_jobs=n_jobs,
                 desc="resize", progress=progress)  # fmt: skip
    resized = [workdir / resized_name(p.name, fmt) for p in paths]
    if exported:
        parts = _exported_parts(gallery, exported, resized, batch_size)
    else:
        import torch

        from whaleid.embed import extract_embeddings
        from whaleid.model import load_model

        device = torch.device(device)
        parts = []
        for path in gallery.check_models():
            model, _ = load_model(path, device)
            parts.append(extract_embeddings(model, resized, m["img_size"], batch_size, device,
                                            desc=f"embed {path.parent.name}", progress=progress,
                                            flip_tta=m["flip_tta"]))  # fmt: skip
    kp = None
    if gallery.keypoints is not None:
        kp = detect_all(paths, boxes, m["crop_margin"], gallery.local, n_jobs, "keypoints")
    return parts, kp


def readable(paths: Sequence[Path], n_jobs: int = -1, progress: bool = True) -> tuple[list[Path], list[str]]:
    """The photos that decode, and one message per photo that does not (named)."""
    errors, _ = check_images(paths, n_jobs=n_jobs, progress=progress)
    bad = {e.split(": ", 1)[0] for e in errors}
    return [p for p in paths if str(p) not in bad], errors


def unique_names(paths: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for p in paths:
        if p.name in seen:
            raise DataError(f"{p} and {seen[p.name]} share the file name {p.name!r}; photos are named by file name "
                            "in the gallery, so rename one.")  # fmt: skip
        seen[p.name] = p


def identify(gallery: Gallery, paths: Sequence[Path], boxes: dict[str, Box] | None = None, device: object = "cpu",
             top_k: int = 5, progress: bool = True, n_jobs: int = -1,
             exported: Sequence[Path] | None = None) -> pd.DataFrame:  # fmt: skip
    """Per photo: its five predictions by the gallery's rule (``predictions``, as in submission.csv) and its
    ``top_k`` known individuals with their scores (``candidates``: ``id:score`` separated by spaces, best first)."""
    unique_names(paths)
    with tempfile.TemporaryDirectory(prefix="whaleid-identify-") as tmp:
        parts, kp = embed_photos(gallery, paths, boxes, Path(tmp), device, progress=progress, n_jobs=n_jobs,
                                 exported=exported)  # fmt: skip
    nn = gallery.rank(gallery.search(parts, [p.name for p in paths]), kp, n_jobs)
    rule = gallery.rule
    species = gallery.individuals["species"].to_numpy(dtype=object)
    from whaleid.local import as_neighbours

    pred = apply_rule(rule, as_neighbours(nn), species)
    labels, scores = candidates(nn["sims"], nn["neighbors"], nn["gallery_labels"], rule.scoring, rule.vote_power)
    names = np.asarray([*gallery.individuals["individual_id"], NEW_INDIVIDUAL], dtype=object)
    rows = []
    for i, p in enumerate(paths):
        shown = [f"{names[c]}:{s:.4f}" for c, s in zip(labels[i, :top_k], scores[i, :top_k], strict=True)
                 if np.isfinite(s)]  # fmt: skip
        pr = names[np.where(pred[i] == NEW, len(names) - 1, pred[i])]
        rows.append({"image": p.name, "path": str(p), "predictions": " ".join(pr),
                     "new_individual_first": bool(pred[i, 0] == NEW), "candidates": " ".join(shown)})  # fmt: skip
    return pd.DataFrame(rows)


def add_photos(gallery: Gallery, paths: Sequence[Path], ids: Sequence[str], species: Sequence[str] | None = None,
               boxes: dict[str, Box] | None = None, device: object = "cpu", progress: bool = True,
               n_jobs: int = -1) -> Gallery:  # fmt: skip
    """``gallery`` with ``paths`` added as photos of individuals ``ids`` (new individuals get ``species``, "" when
    unknown). Refuses a photo already in the gallery (same file name or same bytes) before embedding anything."""
    from whaleid.data import check_labels

    unique_names(paths)
    frame = pd.DataFrame({"image": [p.name for p in paths], "individual_id": list(ids),
                          "species": list(species) if species is not None else [""] * len(paths)})  # fmt: skip
    check_labels(frame.assign(species=frame["species"].replace("", "unknown")), "the photos to add")
    known_ids = {i.lower(): i for i in gallery.individuals["individual_id"]}
    for i in frame["individual_id"].unique():
        if i not in set(known_ids.values()) and i.lower() in known_ids:
            raise DataError(f"individual_id {i!r} differs from the gallery's {known_ids[i.lower()]!r} only in letter "
                            "case; one animal or two? Use the gallery's spelling for the same animal.")  # fmt: skip
    taken = set(gallery.photos["image"])
    clash = [n for n in frame["image"] if n in taken]
    if clash:
        raise DataError(f"{clash[0]}: a gallery photo already has this name ({len(clash)} clash(es)); rename the "
                        "file or remove the old photo with `whaleid gallery remove --image`.")  # fmt: skip
    digests = file_digests(paths, n_jobs, progress)
    known = dict(zip(gallery.photos["sha1"], gallery.photos["image"], strict=True))
    dup = [(p, known[d]) for p, d in zip(paths, digests, strict=True) if d in known]
    if dup:
        raise DataError(f"{dup[0][0]} is already in the gallery as {dup[0][1]} (same bytes; {len(dup)} duplicate(s)).")
    with tempfile.TemporaryDirectory(prefix="whaleid-gallery-") as tmp:
        parts, kp = embed_photos(gallery, paths, boxes, Path(tmp), device, progress=progress, n_jobs=n_jobs)
    vectors = combine(parts)
    individuals = gallery.individuals
    new = frame.drop_duplicates("individual_id")
    new = new[~new["individual_id"].isin(individuals["individual_id"])]
    if len(new):
        individuals = pd.concat([individuals, pd.DataFrame({"individual_id": new["individual_id"],
                                 "species": new["species"], "trained": False})], ignore_index=True)  # fmt: skip
    centres = {n: _pad_centres(c, len(individuals)) for n, c in gallery.centres.items()}
    start = int(gallery.photos["id"].max()) + 1 if len(gallery.photos) else 0
    new_ids = np.arange(start, start + len(paths), dtype=np.int64)
    gallery.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), new_ids)
    photos = pd.concat([gallery.photos, pd.DataFrame({"id": new_ids, "image": frame["image"],
                        "individual_id": frame["individual_id"], "sha1": digests})], ignore_index=True)  # fmt: skip
    keypoints = gallery.keypoints
    if keypoints is not None and kp is not None:
        keypoints = _concat_keypoints(keypoints, kp)
    return Gallery(gallery.manifest, photos, individuals, np.concatenate([gallery.embeddings, vectors]), centres,
                   keypoints, gallery.index)  # fmt: skip


def _pad_centres(c: Centres, n_classes: int) -> Centres:
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
    kp = _keypoint_subset(gallery.keypoints, keep) if gallery.keypoints is not None else None
    return Gallery(gallery.manifest, photos, gallery.individuals, vectors, gallery.centres, kp, index)


def copy_gallery(src: str | Path, dst: str | Path) -> None:
    """Copy a gallery folder (e.g. the DVC-built ``gallery/`` to a catalogue of your own) atomically."""
    with atomic_dir(dst) as tmp:
        shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
