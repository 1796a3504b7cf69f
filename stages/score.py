"""DVC stage `score`: MAP@5 of the submission against solution.csv when the dataset has one, and the share of test
photos given new_individual first (``new_first_share``, with or without an answer key) -> metrics/lb.json.
Ends the run with a one-line summary: CV (all, known, new individuals) and LB MAP@5, and where the submission is."""

import logging

from whaleid.config import Params
from whaleid.core.atomic import read_json, write_json
from whaleid.data.layout import NEW_INDIVIDUAL, load_dataset, read_csv
from whaleid.pipeline.paths import CV_METRICS, LABELS, LB_METRICS, SUBMISSION
from whaleid.pipeline.stage import run_stage
from whaleid.rule.submission import new_share_warning, run_summary, score_submission, validate_submission

log = logging.getLogger("whaleid.score")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    frame = read_csv(SUBMISSION, ("image", "predictions"))
    validate_submission(frame, ds.test_images, read_json(LABELS)["individual_id"])
    first = frame["predictions"].str.split().str[0]
    lb = {"map5": None, "test_images": len(frame), "new_first_share": round(float((first == NEW_INDIVIDUAL).mean()), 6)}
    if ds.solution is None:
        lb["note"] = "no solution.csv in data.dir; upload the submission to Kaggle"
        log.info("no solution.csv: nothing to score locally")
    else:
        lb["map5"] = round(score_submission(frame, ds.solution), 6)
        log.info("LB MAP@5 %.4f on %d test images", lb["map5"], len(frame))
    write_json(LB_METRICS, lb)
    cv = read_json(CV_METRICS)
    log.info("%s", run_summary(cv, lb["map5"], lb["new_first_share"], params.cv.new_ratio))
    warning = new_share_warning(lb["new_first_share"], cv.get("valid_new_first_share"), params.cv.new_ratio)
    if warning:
        log.warning("%s", warning)


if __name__ == "__main__":
    run_stage("score", main)
