"""Stage ``gallery``'s work: the submission's catalogue of known individuals as a gallery folder
(:mod:`whaleid.gallery.folder`), for ``whaleid identify`` and ``whaleid gallery add/remove``.

Built from the pipeline's own artifacts, nothing embedded again: every training photo's combined embedding, the
models' class centres, the photos' keypoints, the fitted rule and the local-feature calibration, and the detector
that boxes photos given without boxes. Pseudo-label round models are not part of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from whaleid.config import Params, runtime_of, to_dict
from whaleid.core.atomic import load_npz, read_json
from whaleid.data.layout import load_dataset
from whaleid.gallery.folder import FORMAT, Gallery, file_digests, new_index
from whaleid.model.weights import sha256_file
from whaleid.pipeline.artifacts import class_species, folds_with_labels, submission_models
from whaleid.pipeline.paths import (
    DETECT_DIR,
    FINAL_DIR,
    FUSED_DIR,
    GALLERY_DIR,
    RULE,
    embed_dir,
    model_path,
)
from whaleid.pipeline.prepare import load_keypoints
from whaleid.retrieval.blend import Centres

DETECTOR = DETECT_DIR / "model.pt"  # photos given to `whaleid identify` without boxes are cropped by it


def build_gallery(params: Params, out: Path = GALLERY_DIR) -> Gallery:
    """Stage ``gallery``: the submission's catalogue of known individuals -> ``out`` (see
    :mod:`whaleid.gallery.folder`), built from the pipeline's own artifacts: nothing is embedded again."""
    names = submission_models(params)
    final = load_npz(FINAL_DIR / "gallery.npz")
    folds, classes = folds_with_labels()
    images = final["images"].astype(str)
    ids = np.arange(len(images), dtype=np.int64)
    photos = pd.DataFrame(
        {
            "id": ids,
            "image": images,
            "individual_id": np.asarray(classes, dtype=object)[final["labels"]],
            "sha1": file_digests(load_dataset(params.data.dir).train_paths(list(images)), runtime_of(params)),
        }
    )
    individuals = pd.DataFrame(
        {"individual_id": classes, "species": class_species(folds, len(classes)), "trained": True}
    )
    calibration = read_json(FUSED_DIR / "calibration.json").get("calibration")
    kp = load_keypoints("train", params.local)
    manifest = {
        "format": FORMAT,
        "models": [{"name": n, "path": str(model_path(n)), "sha256": sha256_file(model_path(n))} for n in names],
        "img_size": params.model.img_size,
        "flip_tta": params.embed.flip_tta,
        "crop_margin": params.crop.margin,
        "resize_format": params.resize.format,
        "knn": to_dict(params.knn),
        "blend": to_dict(params.blend),
        "local": to_dict(params.local),
        "rule": read_json(RULE),
        "calibration": calibration,
        "detector": {"path": str(DETECTOR), "sha256": sha256_file(DETECTOR)} if DETECTOR.is_file() else None,
    }
    centres = {n: Centres.from_arrays(load_npz(embed_dir(n) / "centres.npz")) for n in names}
    vectors = final["embeddings"]
    gallery = Gallery(
        manifest, photos, individuals, vectors, centres, kp, new_index(vectors.shape[1], params.knn, vectors, ids)
    )
    gallery.save(out)
    return gallery
