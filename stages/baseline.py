"""DVC stage `baseline`: constant and raw-pixel kNN baselines, scored like the submission (the same prediction
rule, fitted on the `fold` validation fold) -> metrics/baseline.json."""

import logging

from whaleid.config import Params, runtime_of
from whaleid.core.atomic import write_json
from whaleid.data.folds import training_rows
from whaleid.data.layout import load_dataset
from whaleid.pipeline.artifacts import class_species, folds_with_labels, held_out
from whaleid.pipeline.paths import BASELINE_METRICS
from whaleid.pipeline.stage import run_stage
from whaleid.retrieval.neighbours import Neighbours
from whaleid.retrieval.search import search
from whaleid.rule.baseline import constant_predictions, pixel_features
from whaleid.rule.predict import apply_rule, fit_rule, oracle_map5
from whaleid.rule.submission import build_submission, labels_to_strings, score_submission, solution_labels

log = logging.getLogger("whaleid.baseline")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    folds, classes = folds_with_labels()
    species = class_species(folds, len(classes))
    feats = pixel_features(ds.train_paths(folds["image"]), params.baseline.pixel_size, runtime_of(params))
    valid = (folds["fold"] == params.fold).to_numpy()
    gallery = training_rows(folds["fold"].to_numpy(), held_out(folds), params.fold)
    labels = folds["label"].to_numpy()
    sims, rows = search(feats[gallery], feats[valid], params.knn)
    fit = fit_rule(
        [Neighbours(sims, rows, labels[gallery], labels[valid])],
        params.threshold,
        params.cv.new_ratio,
        class_species=species,
    )
    metrics = {"pixel_knn_cv_map5": fit.metrics["map5"], "pixel_knn_threshold": fit.rule.threshold}
    if ds.solution is not None:
        const = constant_predictions(folds["individual_id"], len(ds.test_images))
        metrics["constant_map5"] = round(score_submission(build_submission(ds.test_images, const), ds.solution), 6)
        test = pixel_features(ds.test_paths(), params.baseline.pixel_size, runtime_of(params))
        sims, rows = search(feats, test, params.knn)
        preds = labels_to_strings(apply_rule(fit.rule, Neighbours(sims, rows, labels), species), classes)
        metrics["pixel_knn_map5"] = round(score_submission(build_submission(ds.test_images, preds), ds.solution), 6)
        truth = solution_labels(ds.solution, ds.test_images, classes)
        best, thr = oracle_map5(Neighbours(sims, rows, labels), truth, params.threshold.scoring)
        metrics |= {"pixel_knn_oracle_map5": round(best, 6), "pixel_knn_oracle_threshold": thr}
    write_json(BASELINE_METRICS, metrics)
    log.info("baselines: %s", ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    run_stage("baseline", main)
