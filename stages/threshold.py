"""DVC stage `threshold`: fit the prediction rule (``threshold.*``, see :mod:`whaleid.rule.predict`) on validation.

With one fold model, CV is its validation fold's MAP@5; with several (``ensemble.members`` naming folds), the
rule is fitted out of fold on all their validation folds pooled, and the per-fold MAP@5 with mean and std are
reported too, and image-retrieval metrics of the known validation queries (recall@1, recall@5, mAP, mINP over
the ranking the rule sees; see :func:`whaleid.rule.metrics.retrieval_metrics`). Writes models/rule.json (the rule the submit stage applies as saved), metrics/cv.json and
plots/threshold.csv (MAP@5 against the threshold). cv.json also gives the share of validation photos given
new_individual first and the recall of the kNN shortlist that local-feature fusion reorders (``shortlist``).
"""

import logging

from whaleid.config import Params
from whaleid.core.atomic import write_csv, write_json
from whaleid.pipeline.artifacts import class_species, folds_with_labels
from whaleid.pipeline.paths import CV_METRICS, NEIGHBOUR_DIR, ROUNDS_DIR, RULE, THRESHOLD_PLOT
from whaleid.pipeline.scoring import load_valid
from whaleid.pipeline.stage import run_stage
from whaleid.rule.metrics import pooled_retrieval_metrics, shortlist_recall
from whaleid.rule.predict import fit_rule

log = logging.getLogger("whaleid.threshold")


def main(params: Params) -> None:
    folds, classes = folds_with_labels()
    valid = load_valid(ROUNDS_DIR)
    parts = list(valid.values())
    fit = fit_rule(
        parts,
        params.threshold,
        params.cv.new_ratio,
        class_species=class_species(folds, len(classes)),
        names=list(valid),
    )
    knn = list(load_valid(NEIGHBOUR_DIR).values())  # before local-feature fusion: what its shortlist holds
    top = params.local.top_pairs if params.local.method != "none" else params.local.refine_pairs
    ks = sorted({min(k, knn[0].rows.shape[1]) for k in (5, 20, 50, 100, top)})
    shortlist = {"pairs": top, **shortlist_recall(knn, ks)}
    m = {**fit.metrics, "fold": params.fold, "retrieval": pooled_retrieval_metrics(parts), "shortlist": shortlist}
    write_json(RULE, fit.rule.to_dict())
    write_json(CV_METRICS, m)
    write_csv(THRESHOLD_PLOT, fit.table.round(6))
    log.info(
        "CV MAP@5 %.4f at threshold %.3f (%s; known %.4f, new %s; %.1f%% of validation is new)%s%s",
        m["map5"],
        m["threshold"],
        m["method"],
        m["map5_known"],
        m["map5_new"],
        100 * m["valid_new_share"],
        f"; out of fold over {', '.join(m['folds'])}: per fold {m['folds_mean']:.4f} ± {m['folds_std']:.4f}"
        if len(valid) > 1
        else "",
        f"; per species: {m['species_thresholds']}" if m["species_thresholds"] else "",
    )


if __name__ == "__main__":
    run_stage("threshold", main)
