"""Pretrained backbone weights: where they come from, what exactly they are, and a converter for foreign names.

Two sources, never both:

* ``model.pretrained: true``: timm's own pretrained loading (``timm.create_model(..., pretrained=True)``), i.e. the
  Hugging Face hub and its cache (``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` reads the cache only). A
  backbone named ``hf-hub:<org>/<repo>`` takes both its architecture and its weights from the hub.
* ``model.weights: PATH``: a local ``.safetensors`` file or a ``.pt``/``.pth`` tensor state dict (loaded with
  ``weights_only=True``), e.g. one written by ``whaleid convert-weights``.

:func:`identity` names the weights (source, file, SHA-256 of the file) so the ``weights`` stage can write it to
``models/weights.json``: the train stage depends on that file, hence a changed weights file retrains, and the
identity is stored in every ``model.pt``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from whaleid.config import LocalConfig, ModelConfig
from whaleid.config.names import HUB_PREFIX
from whaleid.core.errors import ConfigError, DataError, short_reason

if TYPE_CHECKING:
    import torch

# The files timm looks for in a hub repo, in its order (a .safetensors alternative first).
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hub_repo(backbone: str) -> tuple[str, str | None]:
    """(hub repo id, file name or None for timm's default order) that ``timm.create_model(backbone,
    pretrained=True)`` loads from. A model with no hub weights raises ConfigError."""
    if backbone.startswith(HUB_PREFIX):
        return backbone[len(HUB_PREFIX) :].split("@")[0], None
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(backbone)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise ConfigError(f"model.backbone: {exc}") from None
    if cfg is None or not cfg.hf_hub_id:
        raise ConfigError(
            f"model.pretrained: timm has no hub weights for {backbone!r}; use model.weights (a local "
            "file) or another backbone"
        )
    return cfg.hf_hub_id, cfg.hf_hub_filename


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def offline_hint(backbone: str, exc: BaseException) -> str:
    """One line for weights that could not be fetched: where they were looked for and how to pre-fetch them."""
    try:
        repo, _ = hub_repo(backbone)
    except ConfigError:
        repo = backbone
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
    return (
        f"model.pretrained: the weights of {backbone!r} (hub repo {repo}) are not in the Hugging Face cache "
        f"{hub_cache_dir()} and {why} ({type(exc).__name__}). Pre-fetch them on a connected machine with "
        f"`huggingface-cli download {repo}` (or `hf download {repo}`) and copy that machine's cache "
        "(~/.cache/huggingface/hub, or $HF_HUB_CACHE) here, pointing HF_HOME/HF_HUB_CACHE at it; or give a "
        "local file as model.weights"
    )


def hub_file(backbone: str) -> Path | None:
    """The cached file timm loaded (or would load) for ``backbone``'s hub weights, or None if not cached."""
    from huggingface_hub import try_to_load_from_cache

    repo, filename = hub_repo(backbone)
    for name in (filename,) if filename else HUB_FILES:
        found = try_to_load_from_cache(repo, name, cache_dir=hub_cache_dir())
        if isinstance(found, str):
            return Path(found)
    return None


def existing_file(
    path: str | Path, what: str = "model.weights", hint: str = "Give a local .safetensors/.pt file or null."
) -> Path:
    """``path`` as a Path if it is a file; otherwise a ConfigError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: file {str(path)!r} not found. {hint}")
    return path


def safe_torch_load(path: str | Path, where: str, error: type[Exception] = DataError) -> object:
    """``torch.load`` with ``weights_only=True``, every failure one line of our own naming ``where``: a pickle
    that holds anything but tensors and plain types is refused, never run, and torch's advice to turn the
    safety off is not passed on."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError:
        raise error(
            f"{where}: refused: it holds Python objects beyond tensors and plain types (a pickle that could run "
            "code when loaded); whaleid loads only files it wrote or plain tensor state dicts."
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged zip, a cut-short file: torch raises many types
        reason = short_reason(exc)
        raise error(f"{where}: not a readable torch file ({reason}).") from None


def read_state_dict(
    path: str | Path, what: str = "model.weights", hint: str = "Give a local .safetensors/.pt file or null."
) -> dict[str, torch.Tensor]:
    """A local tensor state dict: ``.safetensors``, or a ``.pt``/``.pth`` file loaded with ``weights_only=True``
    (unwrapped from a ``{"state_dict": ...}`` or ``{"model": ...}`` checkpoint). Errors name ``what`` and the file."""
    path = existing_file(path, what, hint)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = safe_torch_load(path, f"{what}: {path}", ConfigError)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"{what}: {path} does not hold a state dict.")
    return state


def _weights_identity(backbone: str, weights: str | None, pretrained: bool, what: str, prefix: str = "") -> dict:
    """The identity of a local weights file (``what`` names its param in errors) or of ``backbone``'s cached hub
    weights (``prefix`` leads the offline error); ``{"source": None}`` for neither."""
    if weights:
        path = existing_file(weights, what)
        return {"source": "file", "file": str(path), "sha256": sha256_file(path)}
    if pretrained:
        repo, _ = hub_repo(backbone)
        found = hub_file(backbone)
        if found is None:
            raise ConfigError(prefix + offline_hint(backbone, FileNotFoundError(repo)))
        return {"source": f"{HUB_PREFIX}{repo}", "file": found.name, "sha256": sha256_file(found)}
    return {"source": None}


def identity(cfg: ModelConfig) -> dict[str, str | None]:
    """What the backbone's initial weights are: ``{"source": None}`` (random initialisation), a local file
    (``source: file``, its path and SHA-256) or hub weights (``source: hf-hub:<repo>``, file name and SHA-256 of
    the cached file). Hub weights must have been fetched already (see :func:`load_check`)."""
    return _weights_identity(cfg.backbone, cfg.weights, cfg.pretrained, "model.weights")


def descriptor_identity(local: LocalConfig) -> dict[str, str | None]:
    """:func:`identity` of the frozen descriptor's weights (``local.descriptor``, named under ``backbone``;
    ``{"source": None}`` without one): its file's SHA-256, or the hub file's when ``local.descriptor_weights`` is
    null."""
    if not local.descriptor:
        return {"source": None}
    found = _weights_identity(local.descriptor, local.descriptor_weights, True, "local.descriptor_weights",
                              "local.descriptor: ")  # fmt: skip
    return {"backbone": local.descriptor, **found}


# efficientnet_pytorch (lukemelas) names -> timm's EfficientNet names. Blocks are numbered flat there
# (``_blocks.7``) and by stage there (``blocks.2.1``); inside a block the two use different layer names, which also
# depend on whether the block expands its channels (timm's InvertedResidual) or not (DepthwiseSeparableConv).
_STEM = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EXPANDING = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(_\w+)\.(\w+)$")


def convert_efficientnet_pytorch(state: dict[str, torch.Tensor], backbone: str) -> dict[str, torch.Tensor]:
    """An ``efficientnet_pytorch`` state dict renamed to the timm model ``backbone`` (e.g. ``tf_efficientnet_lite0``
    for ``efficientnet-lite0``): every tensor mapped by its name and checked against the timm tensor's shape; a
    tensor with no counterpart, a shape that differs or a timm tensor left without weights raises ConfigError
    naming it. The ImageNet classifier is kept (``classifier.*``); whaleid drops it when loading."""
    import timm

    model = timm.create_model(backbone, pretrained=False)
    target = model.state_dict()
    # Flat block number -> "stage.block", in timm's own block order.
    flat = [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    expanding = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if m := _BLOCK_KEY.match(key):
            index, layer, leaf = int(m.group(1)), m.group(2), m.group(3)
            names = _EXPANDING if index in expanding else _DEPTHWISE
            if index >= len(flat) or layer not in names:
                raise ConfigError(f"convert: {key}: no counterpart in {backbone} ({len(flat)} blocks)")
            new = f"{flat[index]}.{names[layer]}.{leaf}"
        elif (m := _TOP_KEY.match(key)) and m.group(1) in _STEM:
            new = f"{_STEM[m.group(1)]}.{m.group(2)}"
        else:
            raise ConfigError(f"convert: {key}: not an efficientnet_pytorch tensor name")
        if new not in target:
            raise ConfigError(f"convert: {key} -> {new}: {backbone} has no such tensor")
        if tuple(target[new].shape) != tuple(tensor.shape):
            raise ConfigError(
                f"convert: {key} -> {new}: shape {tuple(tensor.shape)} in the file, "
                f"{tuple(target[new].shape)} in {backbone}; is the file for another model?"
            )
        out[new] = tensor
    left = [k for k in target if k not in out]
    if left:
        raise ConfigError(
            f"convert: {len(left)} tensor(s) of {backbone} get no weights from the file, e.g. {', '.join(left[:3])}"
        )
    return out
