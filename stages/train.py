"""DVC stage `train`: ArcFace training on folds != `fold` -> models/model.pt, dvclive/ curves.

Resumes from .whaleid_cache/checkpoints/ after an interruption when params, data and code are unchanged.
"""

import contextlib
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

import whaleid
from stages.common import check_resized, folds_with_labels, resized_paths
from whaleid.cli import run_stage
from whaleid.config import KnnConfig, Params, to_dict
from whaleid.data import load_dataset
from whaleid.embed import extract_embeddings
from whaleid.evaluate import cv_score
from whaleid.heads import dynamic_margins
from whaleid.io import read_json, save_torch
from whaleid.model import WhaleNet, model_payload
from whaleid.paths import CHECKPOINT_DIR, DVCLIVE_DIR, FOLDS, LABELS, MODEL, RESIZED_DIR
from whaleid.train import select_device, train_model

log = logging.getLogger("whaleid.train")

# Per-epoch validation uses exact search and a fixed grid, so that the knn and threshold params (tuned after
# training) never invalidate the trained model.
EVAL_THRESHOLDS = [round(0.05 * i, 2) for i in range(21)]

# Code whose edits make a saved checkpoint stale: this stage, its helpers and the library.
CODE = sorted([Path(__file__), Path(__file__).with_name("common.py"), *Path(whaleid.__file__).parent.glob("*.py")])


def fingerprint(params: Params, files: list[Path], images: list[str]) -> str:
    """Hash of everything that changes the trained weights (not runtime settings): the training params, the
    training image names, and the content of ``files`` (folds, labels, data/resized/info.json with its digest of
    every resized image, the training code). Edited params, data or code therefore discard the checkpoint,
    while a DVC checkout or a regeneration of identical files (new modification times) does not.
    """
    h = hashlib.sha256()
    keys = ("fold", "crop", "model", "arcface", "train", "augment")
    h.update(
        json.dumps(
            {k: to_dict(getattr(params, k)) if k != "fold" else params.fold for k in keys}, sort_keys=True
        ).encode()
    )
    h.update(torch.__version__.encode())
    h.update("\0".join(images).encode())
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def train_one(
    params: Params, fold: int | None, out: Path, live_dir: Path | None, evaluate_each_epoch: bool = True
) -> None:
    """Train one model on every fold but ``fold`` (``None``: on all images) and write it to ``out``.

    Per-epoch validation MAP@5 runs on ``fold`` when ``evaluate_each_epoch``; curves go to ``live_dir`` (dvclive)
    when given. Resumes from ``.whaleid_cache/checkpoints/<fold or full>/last.pt`` if params, data and code match.
    """
    from dvclive import Live

    load_dataset(params.data.dir)
    check_resized(params)
    folds, classes = folds_with_labels()
    species_classes = read_json(LABELS)["species"]
    train_rows = folds if fold is None else folds[folds["fold"] != fold]
    valid_rows = folds.iloc[:0] if fold is None else folds[folds["fold"] == fold]
    device = select_device(params.runtime.device)
    name = "full" if fold is None else f"fold{fold}"
    log.info("%s: training on %d images (%d individuals), validating on %d, device %s",
             name, len(train_rows), train_rows["label"].nunique(), len(valid_rows), device)  # fmt: skip

    torch.manual_seed(params.train.seed)
    model = WhaleNet(params.model, params.arcface, len(classes), len(species_classes))
    if params.arcface.dynamic_margin:
        counts = np.bincount(train_rows["label"].to_numpy(), minlength=len(classes))
        model.head.set_margins(dynamic_margins(counts, params.arcface.margin_min, params.arcface.margin,
                                               params.arcface.margin_power))  # fmt: skip
    train_paths = resized_paths("train_images", train_rows["image"], params.resize.format)
    valid_paths = resized_paths("train_images", valid_rows["image"], params.resize.format)
    gallery_labels = train_rows["label"].to_numpy()
    valid_labels = valid_rows["label"].to_numpy()

    def evaluate(net: torch.nn.Module) -> dict[str, float]:
        kw = dict(img_size=params.model.img_size, batch_size=2 * params.train.batch_size, device=device,
                  num_workers=params.runtime.num_workers, progress=False)  # fmt: skip
        gallery = extract_embeddings(net, train_paths, **kw)
        queries = extract_embeddings(net, valid_paths, **kw)
        score = cv_score(queries, valid_labels, gallery, gallery_labels, KnnConfig(), EVAL_THRESHOLDS,
                         params.cv.new_ratio)  # fmt: skip
        return {"valid_map5": score["map5"], "valid_threshold": score["threshold"]}

    checkpoint = CHECKPOINT_DIR / name / "last.pt"
    # The training image list tells folds (and the full fit) apart.
    fp = fingerprint(params, [FOLDS, LABELS, RESIZED_DIR / "info.json", *CODE], list(train_rows["image"]))
    with contextlib.ExitStack() as stack:
        on_epoch = None
        if live_dir is not None:
            live = stack.enter_context(Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None))
            live.log_params({"fold": params.fold, "backbone": params.model.backbone, "img_size": params.model.img_size})

            def on_epoch(row: dict[str, float]) -> None:
                live.step = int(row["epoch"]) - 1
                for key, value in row.items():
                    if key != "epoch":
                        live.log_metric(key if key.startswith("valid") else f"train_{key}", float(value))
                live.next_step()

        history = train_model(
            model, train_paths, train_rows["label"].to_numpy(), params.train, params.augment, params.model.img_size,
            device, params.runtime.num_workers, checkpoint, fp,
            evaluate if len(valid_rows) and evaluate_each_epoch else None, on_epoch,
            species=train_rows["species_label"].to_numpy(), arc=params.arcface,
        )  # fmt: skip
    # A JSON round trip gives the history the same object sharing whether or not it was partly read back from a
    # checkpoint; pickle's memo would otherwise make a resumed run's model.pt differ in bytes (not in values).
    history = json.loads(json.dumps(history))
    payload = model_payload(model.cpu(), params.model, params.arcface, len(classes),
                            {"fold": fold, "history": history}, n_species=len(species_classes))  # fmt: skip
    save_torch(out, payload)
    # The model is safely written: the checkpoint is no longer needed, and a forced rerun must start afresh.
    checkpoint.unlink(missing_ok=True)
    log.info("saved %s (final valid MAP@5 %s)", out, history[-1].get("valid_map5", "n/a") if history else "n/a")


def main(params: Params) -> None:
    train_one(params, params.fold, MODEL, DVCLIVE_DIR)


if __name__ == "__main__":
    run_stage("train", main)
