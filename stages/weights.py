"""DVC stage `weights`: fetch and check the pretrained weights, and name them: the backbone's in
models/weights.json, the frozen descriptor's (``local.descriptor``) in models/descriptor.json.

With ``model.pretrained: true`` timm loads the weights through the Hugging Face hub cache (downloading them when
online and not cached yet); with ``model.weights`` the local file is checked against the backbone; the descriptor
alike (``local.descriptor_weights``, or the hub without one). Each JSON names the source and the SHA-256 of the
file, so the stages that depend on it (train; keypoints) rerun when the file changes. The stage always runs (it
hashes a file or two, or does nothing for a randomly initialised backbone and no descriptor); when the JSONs come
out the same, DVC keeps every trained model and keypoint file.
"""

import logging

from whaleid.config import Params
from whaleid.core.atomic import write_json
from whaleid.model.weights import descriptor_identity, identity
from whaleid.pipeline.paths import DESCRIPTOR_ID, WEIGHTS_ID
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.weights")


def main(params: Params) -> None:
    cfg, local = params.model, params.local
    if cfg.pretrained or cfg.weights or local.descriptor:
        from whaleid.model.network import create_backbone, load_backbone_weights  # timm: imported only when needed
    if cfg.pretrained:
        create_backbone(cfg.backbone, pretrained=True)
    elif cfg.weights:
        load_backbone_weights(create_backbone(cfg.backbone), cfg.weights)
    if local.descriptor:  # checked now, before the keypoints stage describes every photo with it
        from whaleid.model.descriptor import frozen_backbone

        frozen_backbone(local.descriptor, local.descriptor_weights, "cpu")
    found = identity(cfg)
    write_json(WEIGHTS_ID, found)
    write_json(DESCRIPTOR_ID, descriptor_identity(local))
    log.info(
        "%s: backbone %s starts from %s",
        WEIGHTS_ID,
        cfg.backbone,
        "random weights"
        if found["source"] is None
        else f"{found['source']} ({found['file']}, sha256 {found['sha256'][:12]})",
    )
    if local.descriptor:
        log.info("%s: local.descriptor %s, frozen", DESCRIPTOR_ID, local.descriptor)


if __name__ == "__main__":
    run_stage("weights", main)
