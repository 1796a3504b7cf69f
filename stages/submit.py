"""DVC stage `submit`: five predictions per test image with the CV threshold -> submissions/submission.csv.

The file is validated (header, every test image once in sample_submission order, five distinct known ids or
new_individual) before it is written atomically.
"""

import logging

from stages.common import folds_with_labels
from whaleid.cli import run_stage
from whaleid.config import Params
from whaleid.data import DataError, load_dataset
from whaleid.io import load_npz, read_json, write_csv
from whaleid.paths import CV_METRICS, NEIGHBOR_DIR, SUBMISSION
from whaleid.submission import build_submission, labels_to_strings, validate_submission
from whaleid.threshold import NEW, predict_from_neighbors

log = logging.getLogger("whaleid.submit")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    _, classes = folds_with_labels()
    threshold = float(read_json(CV_METRICS)["threshold"])
    nn = load_npz(NEIGHBOR_DIR / "test.npz")
    if list(nn["query_images"]) != ds.test_images:
        raise DataError(f"{NEIGHBOR_DIR / 'test.npz'} does not match sample_submission.csv; rerun embed and knn")
    pred = predict_from_neighbors(nn["sims"], nn["neighbors"], nn["gallery_labels"], threshold)
    frame = build_submission(ds.test_images, labels_to_strings(pred, classes))
    validate_submission(frame, ds.test_images, classes)
    write_csv(SUBMISSION, frame)
    share = float((pred[:, 0] == NEW).mean())
    log.info(
        "wrote %s: %d rows, threshold %.3f, new_individual first for %.1f%%",
        SUBMISSION,
        len(frame),
        threshold,
        100 * share,
    )


if __name__ == "__main__":
    run_stage("submit", main)
