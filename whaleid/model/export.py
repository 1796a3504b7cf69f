"""``whaleid export``: a trained model's embedding network as one file that runs without whaleid: TorchScript
(``torch.jit.load``, no Python model code) or ONNX (ONNX Runtime, TensorRT, OpenVINO...).

The exported graph takes what the resize stage writes, decoded: ``images``, uint8 RGB (N, H, W, 3) at the
model's ``img_size``, any batch size N. It converts, normalises, embeds (flip TTA when ``--flip-tta``, as the
embed stage does with ``embed.flip_tta``) and returns unit-length float32 ``embeddings`` (N, D): the vectors the
gallery and the submission compare, so they can be searched against ``gallery/embeddings.npz``.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from whaleid.core.atomic import atomic_path
from whaleid.core.errors import ConfigError
from whaleid.model.augment import normalize, to_float
from whaleid.model.network import load_model

log = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript")


class EmbeddingNet(nn.Module):
    """uint8 RGB (N, H, W, 3) -> unit-length embeddings (N, D), exactly as the embed stage computes them."""

    def __init__(self, model: nn.Module, flip_tta: bool = False) -> None:
        super().__init__()
        self.model = model
        self.flip_tta = flip_tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(to_float(images))
        emb = F.normalize(self.model.embed(x).float(), dim=1)
        if self.flip_tta:
            flipped = F.normalize(self.model.embed(x.flip(-1)).float(), dim=1)
            emb = F.normalize(emb + flipped, dim=1)
        return emb


META = "whaleid"  # ONNX metadata key / TorchScript extra file holding what the file was exported from


def export_model(model_path: str | Path, out: str | Path, fmt: str, flip_tta: bool = False) -> dict:
    """Write model ``model_path``'s embedding network to ``out`` as ``fmt`` (onnx or torchscript), atomically;
    return the metadata stored in the file (format, source model SHA-256, input size, embedding size, flip TTA)."""
    from whaleid.model.weights import sha256_file

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model, payload = load_model(model_path, "cpu")
    size = int(payload["model"]["img_size"])
    net = EmbeddingNet(model, flip_tta).eval()
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    with torch.no_grad():
        dim = int(net(example).shape[1])
    meta = {"format": fmt, "model_sha256": sha256_file(model_path), "img_size": size, "dim": dim, "flip_tta": flip_tta}
    with torch.no_grad(), warnings.catch_warnings(), atomic_path(out) as tmp:
        warnings.simplefilter("ignore")  # tracer and deprecation notes about code paths the export does not take
        if fmt == "torchscript":
            torch.jit.trace(net, example).save(str(tmp), _extra_files={META: json.dumps(meta)})
        else:
            import onnx

            torch.onnx.export(
                net,
                (example,),
                str(tmp),
                input_names=["images"],
                output_names=["embeddings"],
                dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
                dynamo=False,
                opset_version=17,
            )
            graph = onnx.load(str(tmp))
            onnx.helper.set_model_props(graph, {META: json.dumps(meta)})
            onnx.save(graph, str(tmp))
    log.info(
        "%s -> %s (%s): uint8 RGB (N, %d, %d, 3) -> unit-length float32 (N, %d)%s",
        model_path,
        out,
        fmt,
        size,
        size,
        dim,
        ", flip TTA" if flip_tta else "",
    )
    return meta


class ExportedEmbedder:
    """Runs an exported file (by its suffix: ``.onnx`` with ONNX Runtime, else TorchScript) on uint8 batches."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: exported model not found.")
        try:
            if self.path.suffix == ".onnx":
                import onnxruntime as ort

                self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
                self.module = None
                raw = self.session.get_modelmeta().custom_metadata_map.get(META)
            else:
                extra = {META: ""}
                self.module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
                self.session = None
                raw = extra[META]
        except Exception as exc:  # noqa: BLE001 - the runtimes raise many types
            raise ConfigError(f"{self.path}: not a model `whaleid export` wrote ({type(exc).__name__}).") from None
        if not raw:
            raise ConfigError(f"{self.path}: no whaleid metadata; export it with `whaleid export`.")
        self.meta = json.loads(raw)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if self.session is not None:
            return self.session.run(["embeddings"], {"images": images})[0]
        with torch.no_grad():
            return self.module(torch.from_numpy(images)).numpy()
