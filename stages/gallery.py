"""DVC stage `gallery`: the submission's catalogue of known individuals -> gallery/ (see
:mod:`whaleid.pipeline.catalogue`), for `whaleid identify` and `whaleid gallery add/remove`. Built from the
pipeline's own artifacts: nothing is embedded again."""

import logging

from whaleid.config import Params
from whaleid.pipeline.catalogue import build_gallery
from whaleid.pipeline.paths import GALLERY_DIR
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.gallery")


def main(params: Params) -> None:
    g = build_gallery(params)
    models = " + ".join(m["name"] for m in g.manifest["models"])
    log.info("%s: %d photos of %d individuals, models %s", GALLERY_DIR, len(g.photos), len(g.individuals), models)


if __name__ == "__main__":
    run_stage("gallery", main)
