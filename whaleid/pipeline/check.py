"""`whaleid check [DATA_DIR] [--params params.yaml]` (or `python -m whaleid.pipeline.check`): validate params and a dataset without training.

Checks the params file (keys, types, ranges, the backbone name, the pretrained weights (hub cache or local file), the frozen descriptor's and the crop boxes CSV),
the Kaggle layout and CSVs, and decodes every image in parallel. Exit status 0 when all is well, 2 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from whaleid.config import load_params
from whaleid.core.errors import ConfigError, DataError
from whaleid.core.log import setup_logging
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import boxes_path, check_boxes_dataset, read_boxes
from whaleid.data.folds import make_folds
from whaleid.data.images import DEFAULT_MAX_MEGAPIXELS, check_images, same_photos
from whaleid.data.layout import load_dataset

log = logging.getLogger("whaleid.check")


def conflicting_copies(train: pd.DataFrame, digests: list[str]) -> list[tuple[str, str]]:
    """Pairs (first image, later image) of training photos with the same bytes and different individual_id,
    in train.csv order; unreadable photos (digest "") are left out."""
    first: dict[str, int] = {}
    pairs = []
    images, ids = list(train["image"]), list(train["individual_id"])
    for row, digest in enumerate(digests):
        if not digest:
            continue
        seen = first.setdefault(digest, row)
        if seen != row and ids[seen] != ids[row]:
            pairs.append((images[seen], images[row]))
    return pairs


def run_checks(data_dir: str | None, params_path: str = "params.yaml", decode: bool = True) -> int:
    """Check the params file and the dataset (``data_dir`` or ``data.dir``); log every problem; 0 if none, else 2."""
    setup_logging()
    problems: list[str] = []
    boxes = params = None
    try:
        params = load_params(params_path)
        data_dir = data_dir or params.data.dir
        from whaleid.config.names import check_backbones
        from whaleid.model.network import create_backbone

        check_backbones(params.model.backbone, params.detect.backbone)
        create_backbone(params.model.backbone, params.model.pretrained)
        if params.model.weights:
            from whaleid.model.network import load_backbone_weights

            load_backbone_weights(create_backbone(params.model.backbone), params.model.weights)
        if params.local.descriptor:
            from whaleid.model.descriptor import frozen_backbone

            frozen_backbone(params.local.descriptor, params.local.descriptor_weights, "cpu")
        home = Path(params.data.dir).resolve()
        boxes_file = boxes_path(params.crop.boxes, data_dir)
        if (
            boxes_file
            and params.crop.boxes != "auto"
            and Path(data_dir).resolve() != home
            and boxes_file.resolve().is_relative_to(home)
        ):
            log.warning(
                "crop.boxes (%s) not checked: it belongs to data.dir %s, not %s. To run on %s, set crop.boxes "
                "to its boxes CSV, auto or null.",
                params.crop.boxes,
                params.data.dir,
                data_dir,
                data_dir,
            )
        elif boxes_file:
            boxes = read_boxes(boxes_file)
        log.info("%s: OK", params_path)
    except (ConfigError, DataError) as exc:
        problems.append(str(exc))
    max_mp = params.data.max_megapixels if params is not None else DEFAULT_MAX_MEGAPIXELS
    if data_dir is None:
        problems.append("no dataset folder given and the params file could not be read")
    else:
        try:
            ds = load_dataset(data_dir)
            if boxes is not None:
                try:
                    check_boxes_dataset(boxes, {*ds.train["image"], *ds.test_images}, boxes_file, data_dir)
                except DataError as exc:  # reported with the rest: the images are still checked
                    problems.append(str(exc))
            log.info(
                "%s: layout OK (%d train, %d test images, %d individuals)",
                data_dir,
                len(ds.train),
                len(ds.test_images),
                ds.train["individual_id"].nunique(),
            )
            if params is not None:
                try:
                    make_folds(ds.train, params.cv.n_folds, params.cv.seed)
                except DataError as exc:
                    problems.append(str(exc))
                try:  # what stage detect will do with the boxes (a detector trained or not, and why)
                    from whaleid.pipeline.detect import decide

                    use, why = decide(params.detect.use, boxes, list(ds.train["image"]), list(ds.test_images))
                    log.info("boxes: %s", f"a detector will be trained ({why})" if use else why)
                except ConfigError as exc:
                    problems.append(str(exc))
            if decode:
                errors, digests = check_images(ds.train_paths() + ds.test_paths(), Runtime(max_megapixels=max_mp))
                problems += errors
                n = len(ds.train)
                pairs = same_photos(list(ds.train["image"]), digests[:n], ds.test_images, digests[n:])
                ids = dict(zip(ds.train["image"], ds.train["individual_id"], strict=True))
                if pairs:
                    test, train = pairs[0]
                    log.warning(
                        "%d test photo(s) are byte for byte the same file as a training photo, e.g. "
                        "test_images/%s = train_images/%s (individual %s): their answer is known, and they "
                        "make LB look better than it is",
                        len(pairs),
                        test,
                        train,
                        ids[train],
                    )
                clashes = conflicting_copies(ds.train, digests[:n])
                if clashes:
                    first, second = clashes[0]
                    log.warning(
                        "%d training photo(s) are byte for byte the same file as another one of a different "
                        "individual, e.g. train_images/%s (%s) = train_images/%s (%s): one of the labels is wrong, "
                        "or both are the same animal",
                        len(clashes),
                        first,
                        ids[first],
                        second,
                        ids[second],
                    )
        except DataError as exc:
            problems.append(str(exc))
    for p in problems:
        log.error("%s", p)
    if not problems:
        log.info("all checks passed")
    return 2 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whaleid.pipeline.check", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", help="dataset folder (default: data.dir from the params file)")
    parser.add_argument("--params", default="params.yaml", help="params file to validate")
    parser.add_argument("--no-decode", action="store_true", help="skip decoding every image")
    args = parser.parse_args(argv)
    return run_checks(args.data_dir, args.params, decode=not args.no_decode)


if __name__ == "__main__":
    sys.exit(main())
