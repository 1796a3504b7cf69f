"""Model building: timm backbones by name, the Kaggle-scale preset, local weights, safe loading."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from whaleid.config import ArcFaceConfig, ModelConfig, replace
from whaleid.core.errors import ConfigError
from whaleid.model.network import WhaleNet, create_backbone, load_model, model_payload

TINY = ModelConfig(backbone="test_efficientnet", img_size=32, embedding_dim=16)


def test_forward_shapes() -> None:
    net = WhaleNet(TINY, ArcFaceConfig(), n_classes=7).eval()
    x = torch.randn(3, 3, 32, 32)
    assert net(x).shape == (3, 16)
    assert net(x, torch.tensor([0, 1, 6])).shape == (3, 7)


def test_kaggle_scale_preset_builds_and_runs() -> None:
    """README preset: tf_efficientnet_b0 family at 448 px, 512-d embedding, scale 30, margin 0.3."""
    cfg = ModelConfig(backbone="tf_efficientnet_b0", img_size=448, embedding_dim=512)
    net = WhaleNet(cfg, ArcFaceConfig(scale=30.0, margin=0.3), n_classes=15587).eval()
    with torch.no_grad():
        emb = net(torch.randn(1, 3, 448, 448))
    assert emb.shape == (1, 512) and torch.isfinite(emb).all()


def test_unknown_backbone_suggests_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown timm model 'efficientnet_b00'.*efficientnet_b0"):
        create_backbone("efficientnet_b00")


def test_local_weights_load(tmp_path: Path) -> None:
    source = create_backbone("test_resnet")
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    net = WhaleNet(replace(TINY, backbone="test_resnet", weights=str(path)), ArcFaceConfig(), 3)
    for k, v in source.state_dict().items():
        assert torch.equal(net.backbone.state_dict()[k], v)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.weights: file .*nope\.pt' not found"):
        WhaleNet(replace(TINY, weights=str(tmp_path / "nope.pt")), ArcFaceConfig(), 3)


def test_weights_for_another_backbone_named(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pt"
    torch.save(create_backbone("test_resnet").state_dict(), path)
    with pytest.raises(ConfigError, match=r"does not match the backbone"):
        WhaleNet(replace(TINY, weights=str(path)), ArcFaceConfig(), 3)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_malicious_checkpoint_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.pt"
    with path.open("wb") as fh:
        pickle.dump({"format": "whaleid-model-1", "payload": Evil()}, fh)
    with pytest.raises(ConfigError, match="refused: it holds Python objects beyond tensors") as refused:
        load_model(path)
    assert "must never run" not in capsys.readouterr().out
    assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)  # our line, not torch's advice


def test_model_round_trip(tmp_path: Path) -> None:
    net = WhaleNet(TINY, ArcFaceConfig(), n_classes=5).eval()
    path = tmp_path / "model.pt"
    torch.save(model_payload(net, TINY, ArcFaceConfig(), n_classes=5, extra={"fold": 0}), path)
    loaded, payload = load_model(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x))
    assert payload["fold"] == 0


def test_saved_model_bytes_are_reproducible(tmp_path: Path) -> None:
    from whaleid.core.atomic import save_torch

    torch.manual_seed(0)
    net = WhaleNet(TINY, ArcFaceConfig(), n_classes=5)
    payload = model_payload(net, TINY, ArcFaceConfig(), n_classes=5)
    save_torch(tmp_path / "a.pt", payload)
    save_torch(tmp_path / "b.pt", payload)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
