"""DVC stage `local`: the scoring chain's local-feature fusion (``local.*``; see :mod:`whaleid.retrieval.chain`)
-> data/fused/: valid/<fold model>.npz and test.npz, the kNN results with every score replaced by the calibrated
probability (fitted on the validation pairs) and rows re-sorted, and calibration.json. With ``local.method: none``
the kNN results pass through unchanged.
"""

from whaleid.config import Params
from whaleid.pipeline.paths import FUSED_DIR, NEIGHBOUR_DIR
from whaleid.pipeline.scoring import fuse_all, load_results, save_results
from whaleid.pipeline.stage import run_stage


def main(params: Params) -> None:
    valid, test, info = fuse_all(params, *load_results(NEIGHBOUR_DIR))
    save_results(FUSED_DIR, valid, test, {"calibration.json": info})


if __name__ == "__main__":
    run_stage("local", main)
