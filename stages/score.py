"""DVC stage `score`: MAP@5 of the submission against solution.csv when the dataset has one -> metrics/lb.json.
Ends the run with a one-line summary: CV (all, known, new individuals) and LB MAP@5, and where the submission is."""

import logging

import pandas as pd

from whaleid.config import Params
from whaleid.core.atomic import read_json, write_json
from whaleid.data.layout import load_dataset
from whaleid.pipeline.paths import CV_METRICS, LABELS, LB_METRICS, SUBMISSION
from whaleid.pipeline.stage import run_stage
from whaleid.rule.submission import run_summary, score_submission, validate_submission

log = logging.getLogger("whaleid.score")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    if ds.solution is None:
        write_json(LB_METRICS, {"map5": None, "note": "no solution.csv in data.dir; upload the submission to Kaggle"})
        log.info("no solution.csv: nothing to score locally")
        log.info("%s", run_summary(read_json(CV_METRICS), None))
        return
    frame = pd.read_csv(SUBMISSION, dtype=str, keep_default_na=False)
    validate_submission(frame, ds.test_images, read_json(LABELS)["individual_id"])
    score = score_submission(frame, ds.solution)
    write_json(LB_METRICS, {"map5": round(score, 6), "test_images": len(frame)})
    log.info("LB MAP@5 %.4f on %d test images", score, len(frame))
    log.info("%s", run_summary(read_json(CV_METRICS), score))


if __name__ == "__main__":
    run_stage("score", main)
