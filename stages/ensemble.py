"""DVC stage `ensemble`: the embeddings the submission searches with -> data/final/{gallery,test}.npz.

Members: the `fold` model (unless ``ensemble.fold_model: false``) and every ``ensemble.members`` model, each
trained and embedded by its own stages. Their unit-length embeddings are concatenated and scaled by
1/sqrt(members), so the cosine of two combined embeddings is the mean of the members' cosines. This stage never
trains or embeds anything itself.
"""

import logging

from whaleid.config import Params
from whaleid.core.atomic import atomic_dir, load_npz, save_npz
from whaleid.pipeline.artifacts import submission_models
from whaleid.pipeline.paths import FINAL_DIR, embed_dir
from whaleid.pipeline.stage import run_stage
from whaleid.retrieval.search import combine

log = logging.getLogger("whaleid.ensemble")


def main(params: Params) -> None:
    names = submission_models(params)
    with atomic_dir(FINAL_DIR) as tmp:
        for split, out in (("train", "gallery"), ("test", "test")):
            parts = [load_npz(embed_dir(n) / f"{split}.npz") for n in names]
            save_npz(
                tmp / f"{out}.npz",
                embeddings=combine([p["embeddings"] for p in parts]),
                images=parts[0]["images"],
                labels=parts[0]["labels"],
            )
    log.info("submission embeddings from %s -> %s", " + ".join(names), FINAL_DIR)


if __name__ == "__main__":
    run_stage("ensemble", main)
