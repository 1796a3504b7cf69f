"""DVC stage `submit`: five predictions per test image with the CV threshold rule -> submissions/submission.csv.

The rule comes from metrics/cv.json: the swept threshold (per species where the threshold stage found one, the
species predicted from the top candidate), or with ``threshold.method: share`` the threshold that puts
new_individual first for ``cv.new_ratio`` of the test images. The file is validated (header, every test image
once in sample_submission order, five distinct known ids or new_individual) before it is written atomically.
"""

import logging

import numpy as np

from stages.common import class_species, folds_with_labels
from whaleid.cli import run_stage
from whaleid.config import Params
from whaleid.data import DataError, load_dataset
from whaleid.io import load_npz, read_json, write_csv
from whaleid.paths import CV_METRICS, LABELS, NEIGHBOR_DIR, SUBMISSION
from whaleid.submission import build_submission, labels_to_strings, validate_submission
from whaleid.threshold import NEW, candidates, predict, query_thresholds, share_threshold

log = logging.getLogger("whaleid.submit")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    folds, classes = folds_with_labels()
    cv = read_json(CV_METRICS)
    nn = load_npz(NEIGHBOR_DIR / "test.npz")
    if list(nn["query_images"]) != ds.test_images:
        raise DataError(f"{NEIGHBOR_DIR / 'test.npz'} does not match sample_submission.csv; rerun embed and knn")
    labels, scores = candidates(nn["sims"], nn["neighbors"], nn["gallery_labels"], params.knn.scoring,
                                params.knn.vote_power)  # fmt: skip
    threshold = float(cv["threshold"])
    if cv.get("method") == "share":
        threshold = share_threshold(scores, float(cv["new_ratio"]))
    per_species = cv.get("species_thresholds") or {}
    if per_species:
        names = read_json(LABELS)["species"]
        found = {names.index(name): float(t) for name, t in per_species.items()}
        thr = query_thresholds(class_species(folds, len(classes))[labels[:, 0]], threshold, found)
    else:
        thr = np.full(len(labels), threshold)
    pred = predict(labels, scores, thr)
    frame = build_submission(ds.test_images, labels_to_strings(pred, classes))
    validate_submission(frame, ds.test_images, classes)
    write_csv(SUBMISSION, frame)
    share = float((pred[:, 0] == NEW).mean())
    log.info("wrote %s: %d rows, threshold %.3f%s, new_individual first for %.1f%%", SUBMISSION, len(frame),
             threshold, " (+ per species)" if per_species else "", 100 * share)  # fmt: skip


if __name__ == "__main__":
    run_stage("submit", main)
