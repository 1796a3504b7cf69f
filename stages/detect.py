"""DVC stage `detect`: settle the box every photo is cropped to -> data/detect/boxes.csv (+ model.pt, info.json)
and metrics/detect.json.

With boxes for the train photos only (``crop.boxes``, as annotations come), a detector is trained on them and draws
the test photos' boxes (``detect.use``; see :mod:`whaleid.pipeline.detect`); its IoU on held-back train photos (and
on the test photos, where a ``solution_boxes.csv`` answer key exists) goes to metrics/detect.json. Boxes that cover
the test photos too are passed on as they are; without boxes the photos are used whole (no boxes.csv).
"""

from whaleid.config import Params
from whaleid.core.atomic import write_json
from whaleid.pipeline.detect import settle_boxes
from whaleid.pipeline.paths import DETECT_METRICS
from whaleid.pipeline.stage import run_stage


def main(params: Params) -> None:
    write_json(DETECT_METRICS, settle_boxes(params))


if __name__ == "__main__":
    run_stage("detect", main)
