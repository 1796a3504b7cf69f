"""DVC stages `embed` and `member_embed@<name>`: L2-normalised float32 embeddings of every photo by model <name>
and its ArcFace class centres -> data/embeddings/<name>/{train,test,centres}.npz (see
:mod:`whaleid.pipeline.embedding`), sharded over ``runtime.nproc`` processes under torchrun.
"""

from whaleid.config import Params
from whaleid.model import distributed
from whaleid.pipeline.embedding import embed_member
from whaleid.pipeline.stage import run_stage


def main(params: Params, name: str) -> None:
    if not distributed.relaunched(params.runtime.nproc, "stages.embed", [name]):
        embed_member(params, name)


if __name__ == "__main__":
    run_stage("embed", main, takes_model=True)
