"""DVC stage `encode`: label encoding of individual_id and species, saved as JSON (never a pickle)."""

import logging

from whaleid.config import Params
from whaleid.data import load_dataset
from whaleid.folds import encode_labels
from whaleid.io import write_json
from whaleid.paths import LABELS
from whaleid.stage import run_stage

log = logging.getLogger("whaleid.encode")


def main(params: Params) -> None:
    ds = load_dataset(params.data.dir)
    labels = encode_labels(ds.train)
    write_json(LABELS, labels)
    log.info("%d individuals, %d species, %d train images, %d test images -> %s",
             len(labels["individual_id"]), len(labels["species"]), len(ds.train), len(ds.test_images), LABELS)  # fmt: skip


if __name__ == "__main__":
    run_stage("encode", main)
