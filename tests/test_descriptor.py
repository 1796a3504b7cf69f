"""The frozen pretrained descriptor (``local.descriptor``): photos described as the module says, checked against
the backbone run by hand; its pair score is the cosine, for every candidate; it joins the calibrated fusion; the
weights stage names its file; a bad setting is one line before any photo is described."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from whaleid.config import BlendConfig, KnnConfig, LocalConfig
from whaleid.core.errors import ConfigError
from whaleid.core.runtime import Runtime
from whaleid.gallery.embedding import describe_photos
from whaleid.model.descriptor import describe_all
from whaleid.model.weights import descriptor_identity, sha256_file
from whaleid.retrieval.chain import ScoringChain
from whaleid.retrieval.keypoints import KeypointSet
from whaleid.retrieval.neighbours import Neighbours

RUN = Runtime(progress=False, n_jobs=1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """test_resnet's weights, random but fixed (the descriptor only needs some backbone's)."""
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=0, global_pool="")
    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate([(80, 120), (120, 80), (64, 64), (100, 150)]):
        path = folder / f"p{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        out.append(path)
    return out


def cfg_of(weights: Path, size: int = 64) -> LocalConfig:
    return LocalConfig(method="none", descriptor="test_resnet", descriptor_weights=str(weights), descriptor_size=size)


def test_descriptors_are_the_backbones_mean_feature_of_the_resized_photo(weights, photos) -> None:
    cfg = cfg_of(weights)
    boxes = {"p3.png": (10.0, 20.0, 90.0, 70.0)}  # (x1, y1, x2, y2) pixels: the crop comes first
    kp = KeypointSet(**describe_all(photos, boxes, 0.0, cfg, run=RUN))
    assert kp.images.tolist() == [p.name for p in photos]
    assert kp.descriptors.dtype == np.float16 and np.diff(kp.offsets).tolist() == [1, 1, 1, 1]
    # by hand: timm's backbone, its own mean/std, mean over the last feature map, L2
    net = timm.create_model("test_resnet", num_classes=0, global_pool="")
    net.load_state_dict(load_file(str(weights)))
    net.eval()
    mean = torch.tensor(net.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(net.pretrained_cfg["std"]).view(1, 3, 1, 1)
    for i, path in enumerate(photos):
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        if path.name in boxes:
            x1, y1, x2, y2 = (int(v) for v in boxes[path.name])
            image = image[y1:y2, x1:x2]
        shrink = max(image.shape[:2]) > 64
        image = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0 - mean) / std
        with torch.no_grad():
            want = torch.nn.functional.normalize(net(x).mean(dim=(-2, -1)), dim=1)[0].numpy()
        np.testing.assert_allclose(kp.descriptors[i].astype(np.float32), want, atol=2e-3)


def test_the_descriptor_score_is_the_cosine_of_every_candidate(weights, photos) -> None:
    cfg = LocalConfig(method="none", top_pairs=2, descriptor="test_resnet", descriptor_weights=str(weights),
                      descriptor_size=64)  # fmt: skip
    kp = {"descriptor": describe_photos("descriptor", photos, None, 0.0, cfg, desc="d", run=RUN)}
    names = np.array([p.name for p in photos])
    nn = Neighbours(
        np.array([[0.9, 0.8, 0.7], [0.5, 0.4, 0.3]], np.float32),
        np.array([[1, 2, 3], [0, 3, -1]]),
        np.array([0, 1, 2, 2]),  # p3 shows p2's individual: one same pair among the first two
        query_labels=np.array([0, 2]),
        query_images=names[[0, 2]],
        gallery_images=names,
    )
    chain = ScoringChain(KnnConfig(), BlendConfig(knn_weight=1.0), cfg, run=RUN)
    assert chain.fuses and chain.shortlist == 2
    scores = chain.pair_scores(nn, kp, kp, "match")
    assert list(scores) == ["cosine", "descriptor"]
    d = kp["descriptor"].descriptors.astype(np.float32)
    want = np.array([[d[0] @ d[1], d[0] @ d[2], d[0] @ d[3]], [d[2] @ d[0], d[2] @ d[3], 0.0]], np.float32)
    np.testing.assert_allclose(scores["descriptor"], want, rtol=1e-5, atol=1e-6)  # beyond top_pairs too
    fusion = chain.fit_fusion({"v": nn}, kp)  # a calibration over (cosine, descriptor) from these pairs
    assert fusion.calibration.names == ("cosine", "descriptor")


def test_the_weights_are_named_by_hash_and_bad_settings_are_one_line(weights, tmp_path) -> None:
    found = descriptor_identity(cfg_of(weights))
    assert found == {"backbone": "test_resnet", "source": "file", "file": str(weights), "sha256": sha256_file(weights)}
    assert descriptor_identity(LocalConfig()) == {"source": None}
    with pytest.raises(ConfigError, match="local.descriptor_weights.*not found"):
        descriptor_identity(cfg_of(tmp_path / "missing.safetensors"))
    with pytest.raises(ConfigError, match="local.descriptor is null"):
        LocalConfig(descriptor_weights=str(weights))
    with pytest.raises(ConfigError, match="local.descriptor"):
        describe_all([], None, 0.0, LocalConfig(descriptor="resnet_no_such_model", descriptor_weights=str(weights)))
    with pytest.raises(ConfigError, match="local.descriptor_weights: .* does not match the backbone"):
        describe_all([], None, 0.0, LocalConfig(descriptor="resnet18", descriptor_weights=str(weights)))
