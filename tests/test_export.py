"""`whaleid export`: the exported embedding network (ONNX through ONNX Runtime, TorchScript) gives the embed
stage's embeddings (cosine >= 0.999) at any batch size, with and without flip TTA, and carries the metadata that
`whaleid identify --exported` checks against a gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from whaleid.config import ArcFaceConfig, ModelConfig
from whaleid.core.atomic import save_torch
from whaleid.core.errors import ConfigError
from whaleid.data.images import read_image
from whaleid.data.resize import encode_image, prepare_image
from whaleid.model.embed import extract_embeddings
from whaleid.model.export import ExportedEmbedder, export_model
from whaleid.model.network import WhaleNet, model_payload

SIZE = 32


@pytest.fixture(scope="module")
def model_and_photos(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="test_efficientnet", img_size=SIZE, embedding_dim=24)
    net = WhaleNet(cfg, ArcFaceConfig(), n_classes=5).eval()
    net.train()
    with torch.no_grad():  # BatchNorm statistics away from their defaults, so normalisation mistakes would show
        for _ in range(3):
            net(torch.randn(8, 3, SIZE, SIZE) + 0.5)
    net.eval()
    save_torch(root / "model.pt", model_payload(net, cfg, ArcFaceConfig(), n_classes=5))
    photos = []
    for p in sorted((tiny_dataset / "train_images").iterdir())[:7]:
        out = root / f"{p.name}.bmp"
        out.write_bytes(encode_image(prepare_image(read_image(p), SIZE)))
        photos.append(out)
    return root / "model.pt", photos


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("flip", [False, True])
def test_exported_embeddings_match_pytorch_at_any_batch_size(
    model_and_photos, tmp_path: Path, fmt: str, flip: bool
) -> None:
    from whaleid.model.network import load_model

    model_path, photos = model_and_photos
    out = tmp_path / f"m.{'onnx' if fmt == 'onnx' else 'ts'}"
    meta = export_model(model_path, out, fmt, flip_tta=flip)
    assert meta["img_size"] == SIZE and meta["dim"] == 24 and meta["flip_tta"] is flip
    model, _ = load_model(model_path)
    want = extract_embeddings(
        model, photos, SIZE, batch_size=4, device=torch.device("cpu"), progress=False, flip_tta=flip
    )
    run = ExportedEmbedder(out)
    assert run.meta == meta
    images = np.stack([read_image(p) for p in photos])
    for batch in (1, 3, 7):  # the file was traced with a batch of 2
        got = np.concatenate([run(images[i : i + batch]) for i in range(0, len(images), batch)])
        assert got.shape == want.shape
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        cos = (got * want).sum(axis=1)
        assert cos.min() >= 0.999, (fmt, flip, batch, cos.min())


def test_a_file_export_did_not_write_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "m.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match="not a model `whaleid export` wrote"):
        ExportedEmbedder(bogus)
    with pytest.raises(ConfigError, match="--format must be one of"):
        export_model(tmp_path / "x.pt", tmp_path / "x.bin", "tflite")
