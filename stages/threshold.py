"""DVC stage `threshold`: sweep the new_individual threshold on the validation fold, scored by MAP@5.

Writes metrics/cv.json (best weighted MAP@5, its threshold, known/new breakdown) and plots/threshold.csv.
"""

import logging

import numpy as np

from whaleid.cli import run_stage
from whaleid.config import Params
from whaleid.evaluate import cv_sweep
from whaleid.io import load_npz, write_csv, write_json
from whaleid.paths import CV_METRICS, NEIGHBOR_DIR, THRESHOLD_PLOT

log = logging.getLogger("whaleid.threshold")


def main(params: Params) -> None:
    nn = load_npz(NEIGHBOR_DIR / "valid.npz")
    table, thr = cv_sweep(nn["sims"], nn["neighbors"], nn["query_labels"], nn["gallery_labels"],
                          params.threshold.grid(), params.cv.new_ratio)  # fmt: skip
    best = table[table["threshold"] == thr].iloc[0]
    valid_new = float(np.mean(~np.isin(nn["query_labels"], nn["gallery_labels"])))
    metrics = {
        "map5": round(float(best["map5"]), 6),
        "threshold": thr,
        "map5_unweighted": round(float(best["map5_unweighted"]), 6),
        "map5_known": round(float(best["map5_known"]), 6),
        "map5_new": round(float(best["map5_new"]), 6) if not np.isnan(best["map5_new"]) else None,
        "new_ratio": params.cv.new_ratio,
        "valid_images": int(len(nn["query_labels"])),
        "valid_new_share": round(valid_new, 6),
        "fold": params.fold,
    }
    write_json(CV_METRICS, metrics)
    write_csv(THRESHOLD_PLOT, table.round(6))
    log.info("CV MAP@5 %.4f at threshold %.3f (known %.4f, new %s; %.1f%% of validation is new)",
             metrics["map5"], thr, metrics["map5_known"], metrics["map5_new"], 100 * valid_new)  # fmt: skip


if __name__ == "__main__":
    run_stage("threshold", main)
