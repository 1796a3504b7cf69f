"""Training one named model of the pipeline end to end: ``fold<N>`` (trained on every fold but N, validated on
N each epoch) or ``full`` (trained on every image). Each is the output of its own DVC stage (``train`` for the
``fold`` model, ``member@<name>`` for ensemble members), so DVC caches it and never trains it twice.

Resumes from ``.whaleid_cache/checkpoints/<name>/last.pt`` when :func:`fingerprint` matches: the training params,
the training images and the content of the folds, labels, resized-image digest and training code (the import
closure of ``stages/train.py``, the same files dvc.yaml lists as the stage's code deps).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from whaleid.config import Params, member_fold, to_dict
from whaleid.core.atomic import read_json, save_torch
from whaleid.core.errors import DataError, TrainingDiverged
from whaleid.data.folds import training_rows
from whaleid.data.layout import load_dataset
from whaleid.model import distributed
from whaleid.model.embed import extract_embeddings
from whaleid.model.heads import dynamic_margins
from whaleid.model.network import WhaleNet, model_payload
from whaleid.model.train import train_model
from whaleid.model.weights import identity
from whaleid.pipeline.artifacts import check_resized, folds_with_labels, held_out, resized_paths
from whaleid.pipeline.codedeps import ROOT, code_files
from whaleid.pipeline.paths import CHECKPOINT_DIR, FOLDS, LABELS, RESIZED_DIR, WEIGHTS_ID, live_dir, model_path
from whaleid.rule.evaluate import cv_score, eval_subset

log = logging.getLogger(__name__)

TRAIN_PARAMS = ("crop", "model", "arcface", "train", "augment")


def training_code() -> list[Path]:
    """The files whose edits make a checkpoint stale: the train stage and everything it imports."""
    return [ROOT / f for f in code_files("stages.train")]


def fingerprint(params: Params, files: list[Path], images: list[str]) -> str:
    """Hash of everything that changes the trained weights (not runtime settings): the training params, the
    training image names, and the content of ``files`` (folds, labels, data/resized/info.json with its digest of
    every resized image, the training code). Edited params, data or code therefore discard the checkpoint,
    while a DVC checkout or a regeneration of identical files (new modification times) does not.
    """
    h = hashlib.sha256()
    h.update(json.dumps({k: to_dict(getattr(params, k)) for k in TRAIN_PARAMS}, sort_keys=True).encode())
    h.update(torch.__version__.encode())
    h.update("\0".join(images).encode())
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def _epoch_logger(live: object) -> Callable[[dict[str, float]], None]:
    def on_epoch(row: dict[str, float]) -> None:
        live.step = int(row["epoch"])  # 1-based, as the training log counts epochs
        for key, value in row.items():
            if key != "epoch":
                live.log_metric(key if key.startswith("valid") else f"train_{key}", round(float(value), 6))
        live.next_step()

    return on_epoch


def train_member(
    params: Params,
    name: str,
    extra: pd.DataFrame | None = None,
    fold: int | None | str = "name",
    out_dir: Path | None = None,
) -> Path:
    """Train model ``name`` (``foldN`` or ``full``) and write it to :func:`whaleid.pipeline.paths.model_path`, its curves
    to :func:`whaleid.pipeline.paths.live_dir`; return the model path.

    ``extra`` (columns ``path``, ``label``, ``species_label``) adds images to the training set (pseudo-labelled
    test photos); ``fold`` then gives the validation fold (default: from ``name``) and ``out_dir`` the folder of
    ``model.pt`` and ``live/``.
    """
    from dvclive import Live

    fold = member_fold(name) if fold == "name" else fold
    out = model_path(name) if out_dir is None else Path(out_dir) / "model.pt"
    live_path = live_dir(name) if out_dir is None else Path(out_dir) / "live"
    load_dataset(params.data.dir)
    check_resized(params)
    folds, classes = folds_with_labels()
    species_classes = read_json(LABELS)["species"]
    if fold is not None and not (folds["fold"] == fold).any():
        raise DataError(f"{name}: fold {fold} has no images in {FOLDS}; rerun `dvc repro split` (or lower cv.n_folds)")
    train_rows = folds[training_rows(folds["fold"].to_numpy(), held_out(folds), fold)]
    valid_rows = folds.iloc[:0] if fold is None else folds[folds["fold"] == fold]
    world, device = distributed.init(params.runtime.device)
    log.info(
        "%s: training on %d images (%d individuals), validating on %d, device %s",
        name,
        len(train_rows),
        train_rows["label"].nunique(),
        len(valid_rows),
        device,
    )

    weights = read_json(WEIGHTS_ID)
    if weights != (now := identity(params.model)):
        raise DataError(
            f"{WEIGHTS_ID} says the backbone starts from {weights}, but model.* now gives {now}: "
            "the weights changed since stage `weights` ran; rerun `dvc repro`"
        )
    torch.manual_seed(params.train.seed)
    model = WhaleNet(params.model, params.arcface, len(classes), len(species_classes))
    gallery_paths = resized_paths("train_images", train_rows["image"], params.resize.format)
    train_paths = list(gallery_paths)
    train_labels = train_rows["label"].to_numpy()
    train_species = train_rows["species_label"].to_numpy()
    image_ids = list(train_rows["image"])
    if extra is not None and len(extra):
        train_paths += [Path(p) for p in extra["path"]]
        train_labels = np.concatenate([train_labels, extra["label"].to_numpy(np.int64)])
        train_species = np.concatenate([train_species, extra["species_label"].to_numpy(np.int64)])
        image_ids += [f"{p}={label}" for p, label in zip(extra["path"], extra["label"], strict=True)]
        log.info("%s: + %d pseudo-labelled images", name, len(extra))
    if params.arcface.dynamic_margin:
        counts = np.bincount(train_labels, minlength=len(classes))
        model.head.set_margins(
            dynamic_margins(counts, params.arcface.margin_min, params.arcface.margin, params.arcface.margin_power)
        )
    valid_paths = resized_paths("train_images", valid_rows["image"], params.resize.format)
    g_rows, q_rows = eval_subset(
        train_rows["label"].to_numpy(), valid_rows["label"].to_numpy(), params.train.eval_images, params.train.seed
    )
    if len(g_rows) < len(train_rows) or len(q_rows) < len(valid_rows):
        log.info(
            "%s: per-epoch validation on a subset (train.eval_images %d): %d of %d validation images against "
            "%d of %d gallery images",
            name,
            params.train.eval_images,
            len(q_rows),
            len(valid_rows),
            len(g_rows),
            len(train_rows),
        )

    def evaluate(net: torch.nn.Module) -> dict[str, float]:
        kw = dict(
            img_size=params.model.img_size,
            batch_size=2 * params.train.batch_size,
            device=device,
            num_workers=params.runtime.num_workers,
            progress=False,
        )
        start = time.perf_counter()
        gallery = extract_embeddings(net, [gallery_paths[i] for i in g_rows], **kw)
        queries = extract_embeddings(net, [valid_paths[i] for i in q_rows], **kw)
        if not (np.isfinite(gallery).all() and np.isfinite(queries).all()):
            raise TrainingDiverged(
                f"{name}: the model gives NaN or infinite embeddings in evaluation mode (the "
                "training loss was finite): BatchNorm running statistics have gone bad, typically "
                "from pretrained weights with invalid running_var or a too high train.lr; lower "
                "train.lr or check model.weights."
            )
        score = cv_score(
            queries,
            valid_rows["label"].to_numpy()[q_rows],
            gallery,
            train_rows["label"].to_numpy()[g_rows],
            new_ratio=params.cv.new_ratio,
        )
        log.info(
            "%s: validation embedded %d + %d images and scored them in %.1f s",
            name,
            len(g_rows),
            len(q_rows),
            time.perf_counter() - start,
        )
        return {"valid_map5": score["map5"], "valid_threshold": score["threshold"]}

    checkpoint = CHECKPOINT_DIR / name / "last.pt"
    fp = fingerprint(params, [FOLDS, LABELS, RESIZED_DIR / "info.json", WEIGHTS_ID, *training_code()], image_ids)
    with contextlib.ExitStack() as stack:
        on_epoch = None
        if world.main:  # under torchrun, rank 0 alone writes curves and the model
            live = stack.enter_context(Live(dir=str(live_path), dvcyaml=None, save_dvc_exp=False, report=None))
            on_epoch = _epoch_logger(live)
        history = train_model(
            model,
            train_paths,
            train_labels,
            cfg=params.train,
            aug=params.augment,
            arc=params.arcface,
            img_size=params.model.img_size,
            device=device,
            num_workers=params.runtime.num_workers,
            checkpoint=checkpoint,
            fingerprint=fp,
            evaluate=evaluate if len(valid_rows) else None,
            on_epoch=on_epoch,
            species=train_species,
        )
    if not world.main:
        return out
    # A JSON round trip gives the history the same object sharing whether or not it was partly read back from a
    # checkpoint; pickle's memo would otherwise make a resumed run's model.pt differ in bytes (not in values).
    history = json.loads(json.dumps(history))
    payload = model_payload(
        model.cpu(),
        params.model,
        params.arcface,
        n_classes=len(classes),
        extra={"fold": fold, "history": history, "weights": weights},
        n_species=len(species_classes),
    )
    save_torch(out, payload)
    # The model is safely written: the checkpoint is no longer needed, and a forced rerun must start afresh.
    checkpoint.unlink(missing_ok=True)
    log.info("saved %s (final valid MAP@5 %s)", out, history[-1].get("valid_map5", "n/a") if history else "n/a")
    return out
