"""DVC stage `baseline`: constant and raw-pixel kNN baselines, scored like the submission -> metrics/baseline.json."""

import logging

import numpy as np

from stages.common import folds_with_labels
from whaleid.baseline import constant_predictions, pixel_features
from whaleid.cli import run_stage
from whaleid.config import KnnConfig, Params
from whaleid.data import load_dataset
from whaleid.evaluate import cv_sweep
from whaleid.io import write_json
from whaleid.paths import BASELINE_METRICS
from whaleid.retrieval import search
from whaleid.submission import build_submission, labels_to_strings, score_submission
from whaleid.threshold import predict_from_neighbors

log = logging.getLogger("whaleid.baseline")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    folds, classes = folds_with_labels()
    cfg = params.baseline
    knn = KnnConfig(k=params.knn.k)
    feats = pixel_features(ds.train_paths(folds["image"]), cfg.pixel_size, params.runtime.n_jobs)
    is_valid = (folds["fold"] == params.fold).to_numpy()
    labels = folds["label"].to_numpy()
    sims, nbrs = search(feats[~is_valid], feats[is_valid], knn)
    grid = [round(x, 3) for x in np.arange(0.0, 1.0001, 0.01)]
    table, thr = cv_sweep(sims, nbrs, labels[is_valid], labels[~is_valid], grid, params.cv.new_ratio)
    metrics = {"pixel_knn_cv_map5": round(float(table["map5"].max()), 6), "pixel_knn_threshold": thr}
    if ds.solution is not None:
        const = constant_predictions(folds["individual_id"], len(ds.test_images))
        metrics["constant_map5"] = round(score_submission(build_submission(ds.test_images, const), ds.solution), 6)
        test = pixel_features(ds.test_paths(), cfg.pixel_size, params.runtime.n_jobs)
        sims, nbrs = search(feats, test, knn)
        preds = labels_to_strings(predict_from_neighbors(sims, nbrs, labels, thr), classes)
        metrics["pixel_knn_map5"] = round(score_submission(build_submission(ds.test_images, preds), ds.solution), 6)
    write_json(BASELINE_METRICS, metrics)
    log.info("baselines: %s", metrics)


if __name__ == "__main__":
    run_stage("baseline", main)
