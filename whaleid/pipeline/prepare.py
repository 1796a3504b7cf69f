"""The resize and keypoints stages' work: every train and test photo read once more, cropped to the box stage
``detect`` settled, and turned into what training and matching read.

* :func:`resize_dataset` (stage ``resize``): each photo resized to ``model.img_size`` (:mod:`whaleid.data.resize`)
  -> data/resized/{train_images,test_images}/ (and query_images/: the train photos cropped to the detector's boxes,
  which validation queries are, where stage ``detect`` drew them: ``detect.valid_crops``) and info.json (size, crop, format, a digest of every file, which
  training's resume fingerprint uses). The resume cache is removed once the stage succeeds (DVC keeps the output),
  so each image is stored once.
* :func:`keypoints_dataset` (stage ``keypoints``): each photo's local features (:mod:`whaleid.retrieval.keypoints`)
  -> data/keypoints/{train,test}.<method>.npz for each method ``local.method`` and ``local.refine`` name (and
  query.<method>.npz, the train photos as validation queries are cropped, where those differ).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from whaleid.config import LocalConfig, Params, runtime_of, to_dict
from whaleid.core.atomic import atomic_dir, load_npz, save_npz, write_json
from whaleid.data.layout import load_dataset
from whaleid.data.resize import folder_digest, resize_split
from whaleid.gallery.embedding import describe_photos
from whaleid.pipeline.artifacts import query_boxes, stage_boxes
from whaleid.pipeline.paths import KEYPOINT_DIR, QUERY_IMAGES, RESIZE_CACHE, RESIZED_DIR
from whaleid.retrieval.keypoints import KeypointSet

log = logging.getLogger(__name__)


def resize_dataset(params: Params) -> dict:
    """Stage ``resize``; returns what info.json holds."""
    ds = load_dataset(params.data.dir)
    boxes = stage_boxes()  # settled by stage detect: the CSV's, the detector's or none
    queries = query_boxes()
    size = params.model.img_size
    splits = [("train_images", ds.train_paths(), boxes), ("test_images", ds.test_paths(), boxes)]
    if queries is not None:
        splits.append((QUERY_IMAGES, ds.train_paths(), queries))
    with atomic_dir(RESIZED_DIR) as tmp:
        applied = 0
        for split, paths, split_boxes in splits:
            (tmp / split).mkdir()
            got = resize_split(
                paths,
                tmp / split,
                RESIZE_CACHE / split,
                size=size,
                boxes=split_boxes,
                margin=params.crop.margin,
                fmt=params.resize.format,
                jpeg_quality=params.resize.jpeg_quality,
                desc=f"resize {split}",
                run=runtime_of(params),
            )
            applied += got if split != QUERY_IMAGES else 0
        total = len(ds.train) + len(ds.test_images)
        info = {
            "img_size": size,
            "crop": to_dict(params.crop),
            "resize": to_dict(params.resize),
            "images": total,
            "boxes_applied": applied,
            "query_images": len(ds.train) if queries is not None else 0,
            "digest": folder_digest(tmp),
        }
        write_json(tmp / "info.json", info)
    # The resume cache has served its purpose: DVC now keeps data/resized (hardlinked to its cache where the file
    # system allows), and its run cache restores earlier configs. Keeping ours too would store every image twice.
    shutil.rmtree(RESIZE_CACHE, ignore_errors=True)
    if boxes is not None and applied < total:
        log.warning("no box for %d of %d images (crop.boxes, detect.use); those are used whole", total - applied, total)
    return info


def keypoints_dataset(params: Params) -> None:
    """Stage ``keypoints``."""
    cfg = params.local
    ds = load_dataset(params.data.dir)
    boxes = stage_boxes() if cfg.methods else None  # settled by stage detect
    splits = [("train", ds.train_paths(), boxes), ("test", ds.test_paths(), boxes)]
    queries = query_boxes() if cfg.methods else None
    if queries is not None:
        splits.append(("query", ds.train_paths(), queries))
    with atomic_dir(KEYPOINT_DIR) as tmp:
        for method in cfg.methods:
            for split, paths, split_boxes in splits:
                kp = describe_photos(
                    method,
                    paths,
                    split_boxes,
                    params.crop.margin,
                    cfg,
                    desc=f"{method} {split}",
                    run=runtime_of(params),
                )
                save_npz(tmp / keypoint_file(split, method).name, **kp.arrays())
                per_image = len(kp.points) / max(1, len(kp.images))
                log.info("%s %s: %d keypoints, %.0f per image", method, split, len(kp.points), per_image)
        write_json(tmp / "info.json", {"local": to_dict(cfg)})


def keypoint_file(split: str, method: str) -> Path:
    """Stage ``keypoints``' file of ``split`` (train, test, query) for local-feature ``method``."""
    return KEYPOINT_DIR / f"{split}.{method}.npz"


def load_keypoints(split: str, cfg: LocalConfig) -> dict[str, KeypointSet]:
    """The photos' local features of ``split`` for every method ``local.*`` uses (empty with none). ``query``:
    the train photos as validation queries are cropped, which are the train ones where the keypoints stage wrote
    none (no detector boxes, or ``detect.valid_crops: truth``)."""
    if split == "query" and cfg.methods and not keypoint_file("query", cfg.methods[0]).is_file():
        split = "train"
    return {m: KeypointSet(**load_npz(keypoint_file(split, m))) for m in cfg.methods}
