"""DVC stage `local`: fuse local-feature matches with the embedding's similarities (``local.*``, see
:mod:`whaleid.retrieval.local`) -> data/fused/valid/<fold model>.npz, data/fused/test.npz (the kNN files with ``sims``
replaced by the calibrated probability and rows re-sorted) and data/fused/calibration.json. With
``local.method: none`` the kNN results pass through unchanged.
"""

import logging
from dataclasses import asdict

from whaleid.config import Params
from whaleid.core.atomic import atomic_dir, load_npz, save_npz, write_json
from whaleid.pipeline.paths import FUSED_DIR, KEYPOINT_DIR, NEIGHBOR_DIR
from whaleid.pipeline.stage import run_stage
from whaleid.retrieval.local import KeypointSet, fuse_neighbours

log = logging.getLogger("whaleid.local")


def main(params: Params) -> None:
    cfg = params.local
    valid = {f.stem: load_npz(f) for f in sorted((NEIGHBOR_DIR / "valid").glob("*.npz"))}
    test = load_npz(NEIGHBOR_DIR / "test.npz")
    info: dict = {"method": cfg.method}
    if cfg.method != "none":
        train_kp, test_kp = (KeypointSet(**load_npz(KEYPOINT_DIR / f"{s}.npz")) for s in ("train", "test"))
        valid, test, calibration, stats = fuse_neighbours(valid, test, train_kp, test_kp, cfg, params.runtime.n_jobs)
        info |= {"calibration": asdict(calibration), **stats}
        log.info(
            "fused %d pairs: %s; mean inliers %s (same individual) vs %s (other)",
            stats["pairs"],
            calibration,
            stats["inliers_same_mean"],
            stats["inliers_other_mean"],
        )
    with atomic_dir(FUSED_DIR) as tmp:
        (tmp / "valid").mkdir()
        for name, nn in valid.items():
            save_npz(tmp / "valid" / f"{name}.npz", **nn)
        save_npz(tmp / "test.npz", **test)
        write_json(tmp / "calibration.json", info)


if __name__ == "__main__":
    run_stage("local", main)
