"""DVC stage `threshold`: choose the new_individual threshold on the validation fold, scored by MAP@5.

``threshold.method: sweep`` takes the grid threshold with the best ``cv.new_ratio``-weighted MAP@5; ``share``
puts new_individual first for ``cv.new_ratio`` of the queries (the submit stage then applies the same share to
the test queries). With ``threshold.per_species`` each species (predicted from the top candidate) with at least
``threshold.min_species_queries`` validation queries gets its own swept threshold.

Writes metrics/cv.json (MAP@5 with the chosen rule, its threshold(s), known/new breakdown) and plots/threshold.csv.
"""

import logging

import numpy as np

from stages.common import class_species, folds_with_labels
from whaleid.cli import run_stage
from whaleid.config import ConfigError, Params
from whaleid.evaluate import query_truth
from whaleid.io import load_npz, read_json, write_csv, write_json
from whaleid.paths import CV_METRICS, LABELS, NEIGHBOR_DIR, THRESHOLD_PLOT
from whaleid.threshold import (
    NEW,
    best_threshold,
    blend,
    candidates,
    query_thresholds,
    share_threshold,
    species_thresholds,
    sweep,
    sweep_scores,
)

log = logging.getLogger("whaleid.threshold")


def main(params: Params) -> None:
    cfg = params.threshold
    if cfg.per_species and cfg.method != "sweep":
        raise ConfigError("threshold.per_species works with threshold.method: sweep only; set one of them back.")
    nn = load_npz(NEIGHBOR_DIR / "valid.npz")
    labels, scores = candidates(nn["sims"], nn["neighbors"], nn["gallery_labels"], params.knn.scoring,
                                params.knn.vote_power)  # fmt: skip
    truth = query_truth(nn["query_labels"], nn["gallery_labels"])
    table = sweep(labels, scores, truth, cfg.grid(), params.cv.new_ratio)
    thr = best_threshold(table) if cfg.method == "sweep" else share_threshold(scores, params.cv.new_ratio)
    per_species: dict[str, float] = {}
    if cfg.per_species:
        folds, classes = folds_with_labels()
        species_names = read_json(LABELS)["species"]
        query_species = class_species(folds, len(classes))[labels[:, 0]]
        found = species_thresholds(labels, scores, truth, query_species, cfg.grid(), params.cv.new_ratio,
                                   cfg.min_species_queries)  # fmt: skip
        per_species = {species_names[s]: t for s, t in sorted(found.items())}
        thr_q = query_thresholds(query_species, thr, found)
    else:
        thr_q = np.full(len(truth), thr)
    per_query = sweep_scores(labels, scores, truth, thr_q[:, None])
    weighted, overall, known, new = (float(x[0]) for x in blend(per_query, truth, params.cv.new_ratio))
    valid_new = float(np.mean(truth == NEW))
    metrics = {
        "map5": round(weighted, 6),
        "threshold": thr,
        "method": cfg.method,
        "scoring": params.knn.scoring,
        "species_thresholds": per_species,
        "map5_unweighted": round(overall, 6),
        "map5_known": round(known, 6),
        "map5_new": round(new, 6) if not np.isnan(new) else None,
        "new_ratio": params.cv.new_ratio,
        "valid_images": int(len(truth)),
        "valid_new_share": round(valid_new, 6),
        "fold": params.fold,
    }
    write_json(CV_METRICS, metrics)
    write_csv(THRESHOLD_PLOT, table.round(6))
    log.info("CV MAP@5 %.4f at threshold %.3f (%s; known %.4f, new %s; %.1f%% of validation is new)%s",
             metrics["map5"], thr, cfg.method, known, metrics["map5_new"], 100 * valid_new,
             f"; per species: {per_species}" if per_species else "")  # fmt: skip


if __name__ == "__main__":
    run_stage("threshold", main)
