"""DVC stage `keypoints`: local features of every train and test image for local-feature matching (``local.*``,
see :mod:`whaleid.retrieval.local`) -> data/keypoints/{train,test}.npz. Nothing is computed with ``local.method: none``."""

import logging

from whaleid.config import Params, to_dict
from whaleid.core.atomic import atomic_dir, save_npz, write_json
from whaleid.data.layout import load_dataset
from whaleid.data.resize import stage_boxes
from whaleid.pipeline.paths import KEYPOINT_DIR
from whaleid.pipeline.stage import run_stage
from whaleid.retrieval.local import detect_all

log = logging.getLogger("whaleid.keypoints")


def main(params: Params) -> None:
    cfg = params.local
    ds = load_dataset(params.data.dir)
    with atomic_dir(KEYPOINT_DIR) as tmp:
        if cfg.method != "none":
            boxes = stage_boxes()  # settled by stage detect
            for split, paths in (("train", ds.train_paths()), ("test", ds.test_paths())):
                kp = detect_all(
                    paths,
                    boxes,
                    params.crop.margin,
                    cfg,
                    params.runtime.n_jobs,
                    f"keypoints {split}",
                    params.data.max_megapixels,
                )
                save_npz(tmp / f"{split}.npz", **kp.arrays())
                log.info(
                    "%s: %d keypoints for %d images (%.0f per image)",
                    split,
                    len(kp.points),
                    len(kp.images),
                    len(kp.points) / max(1, len(kp.images)),
                )
        write_json(tmp / "info.json", {"local": to_dict(cfg)})


if __name__ == "__main__":
    run_stage("keypoints", main)
