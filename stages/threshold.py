"""DVC stage `threshold`: fit the prediction rule (``threshold.*``, see :mod:`whaleid.rule.predict`) on validation.

With one fold model, CV is its validation fold's MAP@5; with several (``ensemble.members`` naming folds), the
rule is fitted out of fold on all their validation folds pooled, and the per-fold MAP@5 with mean and std are
reported too, and image-retrieval metrics of the known validation queries (recall@1, recall@5, mAP, mINP over
the ranking the rule sees; see :func:`whaleid.rule.metrics.retrieval_metrics`). Writes models/rule.json (the rule the submit stage applies as saved), metrics/cv.json and
plots/threshold.csv (MAP@5 against the threshold, and the fitted threshold, which the plot marks). cv.json also gives the share of validation photos given
new_individual first and MAP@5 per species (``species``: unweighted, each validation photo once); the rest goes to
metrics/cv_details.json (not a DVC metric, to keep `dvc metrics show` narrow): the retrieval metrics, the recall
of the kNN shortlist that local-feature fusion reorders (``shortlist``), photos per species, MAP@5 unweighted. metrics/oof_predictions.csv holds every
validation photo's predictions (:mod:`whaleid.rule.mistakes`), to look at the misses.
"""

import logging

from whaleid.config import Params
from whaleid.core.atomic import write_csv, write_json
from whaleid.pipeline.artifacts import class_species, folds_with_labels
from whaleid.pipeline.paths import (
    CV_DETAILS,
    CV_METRICS,
    NEIGHBOUR_DIR,
    OOF_PREDICTIONS,
    ROUNDS_DIR,
    RULE,
    THRESHOLD_PLOT,
)
from whaleid.pipeline.scoring import load_valid
from whaleid.pipeline.stage import run_stage
from whaleid.rule.metrics import pooled_retrieval_metrics, shortlist_recall, split_cv_metrics
from whaleid.rule.mistakes import oof_predictions, per_species_map5
from whaleid.rule.predict import fit_rule
from whaleid.rule.submission import cv_line

log = logging.getLogger("whaleid.threshold")


def main(params: Params) -> None:
    folds, classes = folds_with_labels()
    valid = load_valid(ROUNDS_DIR)
    parts, species = list(valid.values()), class_species(folds, len(classes))
    fit = fit_rule(parts, params.threshold, params.cv.new_ratio, class_species=species, names=list(valid))
    knn = list(load_valid(NEIGHBOUR_DIR).values())  # before local-feature fusion: what its shortlist holds
    top = params.local.top_pairs if params.local.method != "none" else params.local.refine_pairs
    ks = sorted({min(k, knn[0].rows.shape[1]) for k in (5, 20, 50, 100, top)})
    shortlist = {"pairs": top, **shortlist_recall(knn, ks)}
    oof = oof_predictions(valid, fit.rule, classes, dict(zip(folds["image"], folds["species"], strict=True)), species)
    m, details = split_cv_metrics(
        {**fit.metrics, "fold": params.fold}, pooled_retrieval_metrics(parts), shortlist, per_species_map5(oof)
    )
    write_json(RULE, fit.rule.to_dict())
    write_json(CV_METRICS, m)
    write_json(CV_DETAILS, details)
    write_csv(OOF_PREDICTIONS, oof)
    write_csv(THRESHOLD_PLOT, fit.table.round(6).assign(chosen_threshold=round(fit.rule.threshold, 6)))  # marked
    log.info("%s", cv_line({**m, **details}, pooled=len(valid) > 1))


if __name__ == "__main__":
    run_stage("threshold", main)
