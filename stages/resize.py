"""DVC stage `resize`: every train and test image decoded once, cropped (to the boxes stage detect settled) and
resized to ``model.img_size`` -> data/resized/{train_images,test_images}/<name>.<resize.format> (and
query_images/: the train photos cropped to the detector's boxes, for validation queries) and data/resized/info.json (see :func:`whaleid.pipeline.prepare.resize_dataset`).

Training and embedding read these small files (BMP by default: no decoding cost to speak of), so no epoch decodes a
full-size photo. Resumes after an interruption; a corrupt image stops the stage here, naming the file.
"""

import logging

from whaleid.config import Params
from whaleid.pipeline.paths import RESIZED_DIR
from whaleid.pipeline.prepare import resize_dataset
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.resize")


def main(params: Params) -> None:
    info = resize_dataset(params)
    log.info(
        "%d images resized to %d px (%d cropped to their box) -> %s (%s)",
        info["images"],
        info["img_size"],
        info["boxes_applied"],
        RESIZED_DIR,
        params.resize.format,
    )


if __name__ == "__main__":
    run_stage("resize", main)
