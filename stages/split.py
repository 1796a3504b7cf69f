"""DVC stage `split`: stratified k-fold on individual_id -> data/prepared/folds.csv."""

import logging

from whaleid.config import Params
from whaleid.data import load_dataset
from whaleid.folds import make_folds
from whaleid.io import write_csv
from whaleid.paths import FOLDS
from whaleid.stage import run_stage

log = logging.getLogger("whaleid.split")


def main(params: Params) -> None:
    train = load_dataset(params.data.dir).train.copy()
    train["fold"] = make_folds(train, params.cv.n_folds, params.cv.seed)
    write_csv(FOLDS, train)
    for fold in range(params.cv.n_folds):
        valid = train[train["fold"] == fold]
        seen = set(train.loc[train["fold"] != fold, "individual_id"])
        new = (~valid["individual_id"].isin(seen)).mean()
        log.info("fold %d: %d validation images, %.1f%% of them new individuals", fold, len(valid), 100 * new)


if __name__ == "__main__":
    run_stage("split", main)
