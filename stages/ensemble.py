"""DVC stage `ensemble`: the embeddings the submission searches with -> data/final/{gallery,test}.npz.

Members: the `fold` model (unless ``ensemble.fold_model: false``) and every ``ensemble.members`` model, each
trained and embedded by its own stages; their embeddings are combined so that a cosine is the mean of the
members' cosines (:func:`whaleid.pipeline.embedding.combine_members`). This stage never trains or embeds anything.
"""

import logging

from whaleid.config import Params
from whaleid.pipeline.embedding import combine_members
from whaleid.pipeline.paths import FINAL_DIR
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.ensemble")


def main(params: Params) -> None:
    names = combine_members(params)
    log.info("submission embeddings from %s -> %s", " + ".join(names), FINAL_DIR)


if __name__ == "__main__":
    run_stage("ensemble", main)
