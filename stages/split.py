"""DVC stage `split`: stratified k-fold on individual_id -> data/prepared/folds.csv."""

import logging

from whaleid.config import Params
from whaleid.core.atomic import write_csv
from whaleid.data.folds import encode_held, hold_out_new, make_folds, new_shares
from whaleid.data.layout import load_dataset
from whaleid.pipeline.paths import FOLDS
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.split")


def main(params: Params) -> None:
    train = load_dataset(params.data.dir).train.copy()
    cv = params.cv
    folds = make_folds(train, cv.n_folds, cv.seed)
    held = hold_out_new(train, folds, cv.n_folds, cv.min_new_share, cv.seed)
    write_csv(FOLDS, train.assign(fold=folds, holdout=encode_held(held)))
    for row in new_shares(train, folds, held, cv.n_folds).itertuples():
        added = row.total - row.natural
        log.info(
            "fold %d: %d validation images, %.1f%% of them new individuals (%.1f%% natural%s)",
            row.fold,
            row.valid_images,
            100 * row.total,
            100 * row.natural,
            f" + {100 * added:.1f}% from {row.held_out_individuals} individuals held out of training"
            if row.held_out_individuals
            else "",
        )


if __name__ == "__main__":
    run_stage("split", main)
