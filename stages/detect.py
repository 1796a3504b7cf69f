"""DVC stage `detect`: settle the box every photo is cropped to -> data/detect/boxes.csv (+ model.pt, info.json)
and metrics/detect.json.

With boxes for the train photos only (``crop.boxes``, as annotations come), a detector is trained on them and draws
the test photos' boxes (:mod:`whaleid.model.boxnet`; ``detect.use``); its IoU on held-back train photos (and on the test
photos, where a ``solution_boxes.csv`` answer key exists) goes to metrics/detect.json. Boxes that cover the test
photos too are passed on as they are; without boxes the photos are used whole (no boxes.csv).
"""

import logging
import shutil
from pathlib import Path

import pandas as pd

from whaleid.config import Params, to_dict
from whaleid.core.atomic import atomic_dir, write_csv, write_json
from whaleid.core.device import select_device
from whaleid.data.layout import SOLUTION_BOXES, load_dataset
from whaleid.data.resize import BOX_COLUMNS, boxes_path, check_boxes_dataset, read_boxes
from whaleid.model.boxnet import DETECT_CACHE, decide, run_detector, save_detector
from whaleid.pipeline.paths import DETECT_DIR, DETECT_METRICS
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.detect")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    path = boxes_path(params.crop.boxes, params.data.dir)
    boxes = read_boxes(path) if path else None
    if boxes is not None:
        check_boxes_dataset(boxes, {*ds.train["image"], *ds.test_images}, path, params.data.dir)
    use, why = decide(params.detect.use, boxes, list(ds.train["image"]), list(ds.test_images))
    log.info("boxes: %s (%s)", path or "none", why)
    metrics: dict[str, object] = {"detector": False}
    with atomic_dir(DETECT_DIR) as tmp:
        if use:
            answers = Path(params.data.dir, SOLUTION_BOXES)
            test = set(ds.test_images)  # once: tested per box below (80k boxes at competition scale)
            truth = {n: b for n, b in (boxes or {}).items() if n in test} or (
                read_boxes(answers) if answers.is_file() else None
            )
            got = run_detector(
                ds.train_paths(),
                ds.test_paths(),
                boxes or {},
                truth,
                params.detect,
                select_device(params.runtime.device),
                params.data.max_megapixels,
                params.runtime.n_jobs,
            )
            save_detector(tmp / "model.pt", got.model, params.detect)
            boxes, metrics = got.boxes, got.metrics
            log.info("detector: %s", metrics)
        if boxes:
            rows = [(name, *box) for name, box in sorted(boxes.items())]
            write_csv(tmp / "boxes.csv", pd.DataFrame(rows, columns=list(BOX_COLUMNS)))
        write_json(
            tmp / "info.json",
            {
                "source": str(path) if path else None,
                "why": why,
                "detector": use,
                "detect": to_dict(params.detect),
                "metrics": metrics,
            },
        )
    write_json(DETECT_METRICS, metrics)
    shutil.rmtree(DETECT_CACHE, ignore_errors=True)  # decoded photos, kept only to resume an interrupted run


if __name__ == "__main__":
    run_stage("detect", main)
