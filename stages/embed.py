"""DVC stages `embed` and `member_embed@<name>`: L2-normalised float32 embeddings by model <name> ->
data/embeddings/<name>/{train,test}.npz (sharded over ``runtime.nproc`` processes under torchrun).

``train.npz`` holds every training image in folds.csv order (arrays ``embeddings`` (N, d), ``images``, ``labels``
(class numbers), ``folds`` and ``held``), ``test.npz`` every test image in sample_submission order (``labels`` -1),
``centres.npz`` the model's ArcFace class centres for the kNN + classifier blend (``centres`` (C * subcenters, d),
L2-normalised, ``subcenters``, and ``trained`` (C,): the classes this model trained on).
"""

import logging

import numpy as np

from whaleid.config import Params, member_fold
from whaleid.core.atomic import atomic_dir, save_npz
from whaleid.data.folds import training_rows
from whaleid.data.layout import load_dataset
from whaleid.model import distributed
from whaleid.model.embed import embed_dataset
from whaleid.model.network import load_model
from whaleid.pipeline.artifacts import check_resized, folds_with_labels, held_out
from whaleid.pipeline.paths import embed_dir, model_path
from whaleid.pipeline.stage import run_stage
from whaleid.retrieval.blend import Centres

log = logging.getLogger("whaleid.embed")


def main(params: Params, name: str) -> None:
    if distributed.relaunched(params.runtime.nproc, "stages.embed", [name]):
        return
    ds = load_dataset(params.data.dir)
    check_resized(params)
    folds, _ = folds_with_labels()
    world, device = distributed.init(params.runtime.device)
    model, payload = load_model(model_path(name), device)
    train, test = embed_dataset(
        model, params, folds["image"], ds.test_images, device, name, int(payload["model"]["img_size"]), world
    )
    if not world.main:  # under torchrun each rank embedded a share; rank 0 writes
        return
    with atomic_dir(embed_dir(name)) as tmp:
        save_npz(
            tmp / "train.npz",
            embeddings=train,
            images=np.asarray(folds["image"], dtype=str),
            labels=folds["label"].to_numpy(),
            folds=folds["fold"].to_numpy(),
            held=held_out(folds),
        )
        save_npz(
            tmp / "test.npz",
            embeddings=test,
            images=np.asarray(ds.test_images, dtype=str),
            labels=np.full(len(test), -1, dtype=np.int64),
        )
        trained_rows = training_rows(folds["fold"].to_numpy(), held_out(folds), member_fold(name))
        trained = np.bincount(folds["label"].to_numpy()[trained_rows], minlength=model.head.n_classes) > 0
        save_npz(tmp / "centres.npz", **Centres.of_model(model.head, trained).arrays())
    log.info(
        "%s: %d train and %d test embeddings of dimension %d -> %s",
        name,
        len(train),
        len(test),
        train.shape[1],
        embed_dir(name),
    )


if __name__ == "__main__":
    run_stage("embed", main, takes_model=True)
