"""DVC stage `weights`: fetch and check the backbone's pretrained weights, and name them in models/weights.json.

With ``model.pretrained: true`` timm loads the weights through the Hugging Face hub cache (downloading them when
online and not cached yet); with ``model.weights`` the local file is checked against the backbone. The JSON names
the source and the SHA-256 of the file, so the train stage (which depends on it) reruns when the file changes. The
stage always runs (it hashes one file, or does nothing for a randomly initialised backbone); when the JSON comes
out the same, DVC keeps every trained model.
"""

import logging

from whaleid.config import Params
from whaleid.core.atomic import write_json
from whaleid.model.weights import identity
from whaleid.pipeline.paths import WEIGHTS_ID
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.weights")


def main(params: Params) -> None:
    cfg = params.model
    if cfg.pretrained or cfg.weights:
        from whaleid.model.network import create_backbone, load_backbone_weights  # timm: imported only when needed
    if cfg.pretrained:
        create_backbone(cfg.backbone, pretrained=True)
    elif cfg.weights:
        load_backbone_weights(create_backbone(cfg.backbone), cfg.weights)
    found = identity(cfg)
    write_json(WEIGHTS_ID, found)
    log.info(
        "%s: backbone %s starts from %s",
        WEIGHTS_ID,
        cfg.backbone,
        "random weights"
        if found["source"] is None
        else f"{found['source']} ({found['file']}, sha256 {found['sha256'][:12]})",
    )


if __name__ == "__main__":
    run_stage("weights", main)
