"""DVC stage `submit`: five predictions per test image by the fitted rule (models/rule.json, applied as saved) ->
submissions/submission.csv, validated (header, every test image once in sample_submission order, five distinct
known ids or new_individual) before it is written atomically.
"""

import logging

from whaleid.config import Params
from whaleid.core.atomic import read_json, write_csv
from whaleid.core.errors import DataError
from whaleid.data.layout import load_dataset
from whaleid.pipeline.artifacts import class_species, folds_with_labels
from whaleid.pipeline.paths import ROUNDS_DIR, RULE, SUBMISSION
from whaleid.pipeline.stage import run_stage
from whaleid.retrieval.neighbours import Neighbours
from whaleid.rule.candidates import NEW
from whaleid.rule.predict import Rule, apply_rule
from whaleid.rule.submission import build_submission, labels_to_strings, validate_submission

log = logging.getLogger("whaleid.submit")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    folds, classes = folds_with_labels()
    rule = Rule.from_dict(read_json(RULE), str(RULE))
    nn = Neighbours.load(ROUNDS_DIR / "test.npz")
    if nn.query_images is None or list(nn.query_images) != ds.test_images:
        raise DataError(f"{ROUNDS_DIR / 'test.npz'} does not match sample_submission.csv; rerun embed and knn")
    pred = apply_rule(rule, nn, class_species(folds, len(classes)))
    frame = build_submission(ds.test_images, labels_to_strings(pred, classes))
    validate_submission(frame, ds.test_images, classes)
    write_csv(SUBMISSION, frame)
    log.info(
        "wrote %s: %d rows, rule %s threshold %.3f%s, new_individual first for %.1f%%",
        SUBMISSION,
        len(frame),
        rule.method,
        rule.threshold,
        " (+ per species)" if rule.species_thresholds else "",
        100 * float((pred[:, 0] == NEW).mean()),
    )


if __name__ == "__main__":
    run_stage("submit", main)
