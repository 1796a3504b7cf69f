"""DVC stage `keypoints`: local features of every train and test image for local-feature matching (``local.*``,
see :func:`whaleid.pipeline.prepare.keypoints_dataset`) -> data/keypoints/{train,test}.npz. Nothing is computed
with ``local.method: none``."""

from whaleid.config import Params
from whaleid.pipeline.prepare import keypoints_dataset
from whaleid.pipeline.stage import run_stage


def main(params: Params) -> None:
    keypoints_dataset(params)


if __name__ == "__main__":
    run_stage("keypoints", main)
