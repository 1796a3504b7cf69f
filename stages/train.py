"""DVC stages `train` (the `fold` model) and `member@<name>` (ensemble members): train model <name> -> models/<name>/
model.pt, with its training curves in models/<name>/live/.

    python -m stages.train fold0    # trained on every fold but 0, validated on fold 0 after each epoch
    python -m stages.train full     # trained on every image

Resumes from .whaleid_cache/checkpoints/<name>/ after an interruption when params, data and code are unchanged
(see :mod:`whaleid.pipeline.members`). With ``runtime.nproc`` > 1 it starts itself again under torchrun, one process per GPU
(or CPU share), and waits (see :mod:`whaleid.model.distributed`).
"""

from whaleid.config import Params
from whaleid.model import distributed
from whaleid.pipeline.members import train_member
from whaleid.pipeline.stage import run_stage


def main(params: Params, name: str) -> None:
    if not distributed.relaunched(params.runtime.nproc, "stages.train", [name]):
        train_member(params, name)


if __name__ == "__main__":
    run_stage("train", main, takes_model=True)
