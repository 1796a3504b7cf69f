"""DVC stage `encode`: label encoding of individual_id and species, saved as JSON (never a pickle)."""

import logging

from whaleid.config import Params
from whaleid.config.names import check_backbones
from whaleid.core.atomic import write_json
from whaleid.data.folds import encode_labels
from whaleid.data.layout import load_dataset
from whaleid.pipeline.paths import LABELS
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.encode")


def main(params: Params) -> None:
    check_backbones(params.model.backbone, params.detect.backbone)  # a typo stops the run here, not at `train`
    ds = load_dataset(params.data.dir)
    labels = encode_labels(ds.train)
    write_json(LABELS, labels)
    log.info(
        "%d individuals, %d species, %d train images, %d test images -> %s",
        len(labels["individual_id"]),
        len(labels["species"]),
        len(ds.train),
        len(ds.test_images),
        LABELS,
    )


if __name__ == "__main__":
    run_stage("encode", main)
