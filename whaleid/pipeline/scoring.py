"""The knn and local stages' work: the scoring chain (:mod:`whaleid.retrieval.chain`) run over the pipeline's
embeddings and keypoints.

* :func:`search_all` (stage ``knn``): for every fold model CV is computed from, its validation fold's photos
  against the photos it trained on (validation blended with that model's own class centres); and the test photos
  against the submission gallery (every training photo; the mean over the submission models' centres).
* :func:`fuse_all` (stage ``local``): the calibration fitted on the validation results, every result fused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from whaleid.config import Params, runtime_of
from whaleid.core.atomic import atomic_dir, load_npz, write_json
from whaleid.core.errors import DataError
from whaleid.data.folds import training_rows
from whaleid.pipeline.artifacts import cv_models, submission_models
from whaleid.pipeline.paths import FINAL_DIR, embed_dir
from whaleid.pipeline.prepare import load_keypoints
from whaleid.retrieval.blend import Centres
from whaleid.retrieval.chain import Fusion, Photos, ScoringChain
from whaleid.retrieval.neighbours import Neighbours

log = logging.getLogger(__name__)


def chain_of(params: Params) -> ScoringChain:
    return ScoringChain(params.knn, params.blend, params.local, run=runtime_of(params))


def _centres(name: str) -> Centres:
    return Centres.from_arrays(load_npz(embed_dir(name) / "centres.npz"))


def validation_photos(arrays: dict[str, np.ndarray], fold: int) -> tuple[Photos, Photos]:
    """A fold model's training-photo embeddings (an embed stage's ``train.npz``) split into the queries of its
    validation fold ``fold`` and the gallery it trained on (each model's own embeddings as its blend part). The
    queries are the photos cropped as the test photos are (``queries``) where the embed stage wrote them."""
    photos = Photos.of(arrays, [arrays["embeddings"]])
    gallery = photos.take(training_rows(arrays["folds"], arrays["held"], fold))
    if "queries" in arrays:
        photos = Photos.of({**arrays, "embeddings": arrays["queries"]}, [arrays["queries"]])
    return photos.take(arrays["folds"] == fold), gallery


def search_all(params: Params) -> tuple[dict[str, Neighbours], Neighbours]:
    """Stage ``knn``: the validation result of every CV fold model (by name) and the test result."""
    chain, blend = chain_of(params), params.blend.knn_weight < 1.0
    valid = {}
    for name, fold in cv_models(params).items():
        queries, gallery = validation_photos(load_npz(embed_dir(name) / "train.npz"), fold)
        valid[name] = chain.neighbours(queries, gallery, centres=[_centres(name)] if blend else [])
    names = submission_models(params)
    parts = [load_npz(embed_dir(n) / "test.npz")["embeddings"] for n in names] if blend else []
    test = Photos.of(load_npz(FINAL_DIR / "test.npz"), parts)
    gallery = Photos.of(load_npz(FINAL_DIR / "gallery.npz"))
    return valid, chain.neighbours(test, gallery, centres=[_centres(n) for n in names] if blend else [])


def fuse_all(params: Params, valid: dict[str, Neighbours], test: Neighbours) -> tuple[dict, Neighbours, dict]:
    """Stage ``local``: the validation and test results fused (unchanged with ``local.method: none``), and what
    calibration.json records (the method, the calibration, statistics of the pairs)."""
    chain = chain_of(params)
    info: dict = {"method": params.local.method}
    if not chain.fuses:
        return valid, test, info
    train_kp, test_kp = load_keypoints("train", params.local), load_keypoints("test", params.local)
    fusion: Fusion = chain.fit_fusion(valid, train_kp, load_keypoints("query", params.local))
    test = chain.fuse(test, fusion.calibration, test_kp, train_kp, "match test")
    top = min(chain.shortlist, test.rows.shape[1])
    stats = {**fusion.stats, "test_pairs": int(test.valid[:, :top].sum())}
    log.info("fused with %s; %s", fusion.calibration, stats)
    return fusion.valid, test, info | {"calibration": fusion.calibration.to_dict(), **stats}


def save_results(folder: Path, valid: dict[str, Neighbours], test: Neighbours, files: dict | None = None) -> None:
    """Write scored neighbours as the knn, local and pseudo stages keep them, atomically: ``folder``/valid/<fold
    model>.npz, ``folder``/test.npz, and each of ``files`` (name -> JSON-able object) beside them."""
    with atomic_dir(folder) as tmp:
        (tmp / "valid").mkdir()
        for name, nn in valid.items():
            nn.save(tmp / "valid" / f"{name}.npz")
        test.save(tmp / "test.npz")
        for name, obj in (files or {}).items():
            write_json(tmp / name, obj)


def load_valid(folder: Path) -> dict[str, Neighbours]:
    """The validation results :func:`save_results` wrote, by fold model name."""
    valid = {f.stem: Neighbours.load(f) for f in sorted((folder / "valid").glob("*.npz"))}
    if not valid:
        raise DataError(f"{folder / 'valid'}: no validation neighbours; rerun `dvc repro` (stage knn onwards).")
    return valid


def load_results(folder: Path) -> tuple[dict[str, Neighbours], Neighbours]:
    """What :func:`save_results` wrote: the validation results by fold model name, and the test result."""
    return load_valid(folder), Neighbours.load(folder / "test.npz")
