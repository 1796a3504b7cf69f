"""Stage ``detect``'s policy: settle the box every photo is cropped to (:func:`settle_boxes`).

With boxes for the train photos only (``crop.boxes``, as annotations come), a detector (:mod:`whaleid.model.boxnet`)
is trained on them and draws the test photos' boxes (``detect.use``: auto, always, never); its IoU on held-back train
photos (and on the test photos, where a ``solution_boxes.csv`` answer key exists) is reported. Boxes that cover the
test photos too are passed on as they are; without boxes the photos are used whole.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whaleid.config import DetectConfig, Params, runtime_of, to_dict
from whaleid.core.atomic import atomic_dir, write_csv, write_json
from whaleid.core.errors import ConfigError
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import (
    BOX_COLUMNS,
    Box,
    boxes_path,
    check_box,
    check_boxes_dataset,
    iou_summary,
    normalise,
    pixel_boxes,
    read_boxes,
)
from whaleid.data.layout import SOLUTION_BOXES, load_dataset
from whaleid.data.photos import load_photos
from whaleid.model.boxnet import BoxNet, holdout_split, new_detector, predict, save_detector, train_detector
from whaleid.pipeline.paths import DETECT_CACHE, DETECT_DIR, QUERY_BOXES

log = logging.getLogger(__name__)


MIN_BOXED = 20  # fewer boxed train photos than this train no detector (detect.use auto)


def decide(use: str, boxes: dict[str, Box] | None, train: Sequence[str], test: Sequence[str]) -> tuple[bool, str]:
    """Whether stage ``detect`` trains a detector, and why (a sentence for the log and info.json)."""
    boxed_train = sum(name in (boxes or {}) for name in train)
    unboxed_test = sum(name not in (boxes or {}) for name in test)
    if use == "never":
        return False, "detect.use is never"
    if use == "always":
        if boxed_train < MIN_BOXED:
            raise ConfigError(
                f"detect.use is always, but the boxes (crop.boxes) cover {boxed_train} train photos; "
                f"a detector needs at least {MIN_BOXED}."
            )
        return True, "detect.use is always"
    if not boxes:
        return False, "no boxes (crop.boxes): photos are used whole"
    if not unboxed_test:
        return False, "the boxes cover every test photo: used as they are"
    if boxed_train < MIN_BOXED:
        return False, (
            f"only {boxed_train} train photos have a box (a detector needs {MIN_BOXED}): the "
            f"{unboxed_test} test photos without one are used whole"
        )
    return True, f"{unboxed_test} of {len(test)} test photos have no box"


@dataclass
class Outcome:
    boxes: dict[str, Box]
    metrics: dict[str, object]
    model: BoxNet
    train_drawn: dict[str, Box]  # the detector's box of every train photo, whatever it is cropped to


def run_detector(
    train_paths: Sequence[Path],
    test_paths: Sequence[Path],
    boxes: dict[str, Box],
    *,
    test_truth: dict[str, Box] | None,
    cfg: DetectConfig,
    run: Runtime = Runtime(),
    cache: Path | None = DETECT_CACHE,
) -> Outcome:
    """Train on the boxed train photos (bar ``cfg.holdout``), measure IoU, and box every photo: train photos keep
    their own box with ``train_crops: truth``; every other photo gets the detector's."""
    started = time.perf_counter()
    model = new_detector(cfg)
    paths = [*train_paths, *test_paths]
    photos = load_photos(paths, cfg.img_size, run=run, cache=cache)
    device = run.torch_device()
    names = [Path(p).name for p in paths]
    boxed = [i for i, name in enumerate(names[: len(train_paths)]) if name in boxes]
    for i in boxed:
        check_box(boxes[names[i]], int(photos.sizes[i, 0]), int(photos.sizes[i, 1]), str(paths[i]))
    truth = normalise([boxes[names[i]] for i in boxed], photos.sizes[boxed])
    fit, held = holdout_split(len(boxed), cfg.holdout, cfg.seed)
    log.info(
        "detector: training %s at %d px on %d boxed train photos (%d held back)",
        cfg.backbone,
        cfg.img_size,
        len(fit),
        len(held),
    )
    model, losses = train_detector(
        photos.images[[boxed[i] for i in fit]], truth[fit], cfg, device=device, progress=run.progress, model=model
    )
    # Train and test photos in batches of their own, as `whaleid identify` on the test folder batches them: the
    # same boxes to the last digit.
    started_predict = time.perf_counter()
    pred = np.concatenate(
        [
            predict(model, photos.images[: len(train_paths)], device),
            predict(model, photos.images[len(train_paths) :], device),
        ]
    )
    per_1k = (time.perf_counter() - started_predict) / max(1, len(paths)) * 1000
    metrics: dict[str, object] = {
        "detector": True,
        "train_photos": len(fit),
        "epochs": cfg.epochs,
        "final_loss": round(losses[-1], 4),
    }
    if len(held):
        got = pred[[boxed[i] for i in held]]
        metrics["holdout"] = {
            **iou_summary(got, truth[held]),
            "photos": len(held),
            "mean_box_iou": iou_summary(np.tile(truth[fit].mean(0), (len(held), 1)), truth[held])["iou"],
        }
    if test_truth:
        known = [i for i, name in enumerate(names) if i >= len(train_paths) and name in test_truth]
        if known:
            true_test = normalise([test_truth[names[i]] for i in known], photos.sizes[known])
            metrics["test"] = {**iou_summary(pred[known], true_test), "photos": len(known)}
    drawn = pixel_boxes(pred, photos.sizes)
    out: dict[str, Box] = {}
    for i, name in enumerate(names):
        own = i < len(train_paths) and name in boxes and cfg.train_crops == "truth"
        out[name] = boxes[name] if own else drawn[i]
    train_drawn = {name: drawn[i] for i, name in enumerate(names[: len(train_paths)])}
    # Timings go to the log, not the metrics: metrics and outputs stay byte-identical from run to run.
    log.info(
        "detector: %.1f s in all (decode, train, box); boxing %.2f s per 1,000 decoded photos",
        time.perf_counter() - started,
        per_1k,
    )
    return Outcome(out, metrics, model, train_drawn)


def write_boxes(path: Path, boxes: dict[str, Box]) -> None:
    rows = [(name, *box) for name, box in sorted(boxes.items())]
    write_csv(path, pd.DataFrame(rows, columns=list(BOX_COLUMNS)))


def settle_boxes(params: Params) -> dict[str, object]:
    """Stage ``detect``: the box of every photo -> data/detect/ (boxes.csv, what every later stage crops to; the
    detector's model.pt when one was trained; query_boxes.csv, the detector's boxes of the train photos that
    validation queries are cropped to, with ``detect.valid_crops: predicted`` while train photos keep their own;
    info.json). Returns the detector's metrics (metrics/detect.json)."""
    ds = load_dataset(params.data.dir)
    path = boxes_path(params.crop.boxes, params.data.dir)
    boxes = read_boxes(path) if path else None
    if boxes is not None:
        check_boxes_dataset(boxes, {*ds.train["image"], *ds.test_images}, path, params.data.dir)
    use, why = decide(params.detect.use, boxes, list(ds.train["image"]), list(ds.test_images))
    log.info("boxes: %s (%s)", path or "none", why)
    metrics: dict[str, object] = {"detector": False}
    with atomic_dir(DETECT_DIR) as tmp:
        if use:
            answers = Path(params.data.dir, SOLUTION_BOXES)
            test = set(ds.test_images)  # once: tested per box below (80k boxes at competition scale)
            truth = {n: b for n, b in (boxes or {}).items() if n in test} or (
                read_boxes(answers) if answers.is_file() else None
            )
            got = run_detector(
                ds.train_paths(),
                ds.test_paths(),
                boxes or {},
                test_truth=truth,
                cfg=params.detect,
                run=runtime_of(params),
            )
            save_detector(tmp / "model.pt", got.model, params.detect)
            boxes, metrics = got.boxes, got.metrics
            if params.detect.valid_crops == "predicted" and params.detect.train_crops == "truth":
                write_boxes(tmp / QUERY_BOXES.name, got.train_drawn)
            log.info("detector: %s", metrics)
        if boxes:
            write_boxes(tmp / "boxes.csv", boxes)
        info = {"source": str(path) if path else None, "why": why, "detector": use, "detect": to_dict(params.detect)}
        write_json(tmp / "info.json", {**info, "metrics": metrics})
    shutil.rmtree(DETECT_CACHE, ignore_errors=True)  # decoded photos, kept only to resume an interrupted run
    return metrics
