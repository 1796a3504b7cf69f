"""DVC stage `resize`: every train and test image decoded once, cropped (to the boxes stage detect settled) and resized to
``model.img_size`` -> data/resized/{train_images,test_images}/<name>.<resize.format> and data/resized/info.json.

Training and embedding read these small files (BMP by default: no decoding cost to speak of), so no epoch
decodes a full-size photo. Resumes after an interruption (see :mod:`whaleid.data.resize`; the resume cache is
removed once the stage succeeds, so each image is stored once); a corrupt image stops the stage here, naming the
file. info.json holds the size, the crop, the format and a digest of every resized file's
content (training's resume fingerprint uses it).
"""

import logging
import shutil

from whaleid.config import Params, to_dict
from whaleid.core.atomic import atomic_dir, write_json
from whaleid.data.layout import load_dataset
from whaleid.data.resize import folder_digest, resize_split, stage_boxes
from whaleid.pipeline.paths import RESIZE_CACHE, RESIZED_DIR
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.resize")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    boxes = stage_boxes()  # settled by stage detect: the CSV's, the detector's or none
    size = params.model.img_size
    with atomic_dir(RESIZED_DIR) as tmp:
        applied = 0
        for split, paths in (("train_images", ds.train_paths()), ("test_images", ds.test_paths())):
            (tmp / split).mkdir()
            applied += resize_split(
                paths,
                tmp / split,
                RESIZE_CACHE / split,
                size,
                boxes,
                params.crop.margin,
                params.resize.format,
                params.resize.jpeg_quality,
                n_jobs=params.runtime.n_jobs,
                desc=f"resize {split}",
                max_megapixels=params.data.max_megapixels,
            )
        total = len(ds.train) + len(ds.test_images)
        write_json(
            tmp / "info.json",
            {
                "img_size": size,
                "crop": to_dict(params.crop),
                "resize": to_dict(params.resize),
                "images": total,
                "boxes_applied": applied,
                "digest": folder_digest(tmp),
            },
        )
    # The resume cache has served its purpose: DVC now keeps data/resized (hardlinked to its cache where the file
    # system allows), and its run cache restores earlier configs. Keeping ours too would store every image twice.
    shutil.rmtree(RESIZE_CACHE, ignore_errors=True)
    if boxes is not None and applied < total:
        log.warning("no box for %d of %d images (crop.boxes, detect.use); those are used whole", total - applied, total)
    log.info(
        "%d images resized to %d px (%d cropped to their box) -> %s (%s)",
        total,
        size,
        applied,
        RESIZED_DIR,
        params.resize.format,
    )


if __name__ == "__main__":
    run_stage("resize", main)
