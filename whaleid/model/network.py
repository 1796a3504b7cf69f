"""Embedding model: any timm backbone, GeM pooling, a linear + BatchNorm neck, and a margin head.

The backbone is created without a classifier or pooling (``num_classes=0, global_pool=''``). Its initial weights
are random, timm's pretrained ones from the Hugging Face hub cache (``model.pretrained``), or a local file
(``model.weights``: ``.safetensors``, or a ``.pt``/``.pth`` state dict loaded with ``weights_only=True``); see
:mod:`whaleid.model.weights`. Pretrained backbones see their inputs normalised with their own mean and std.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from whaleid.config import ArcFaceConfig, ModelConfig, to_dict
from whaleid.config.names import check_timm_name
from whaleid.core.errors import ConfigError, short_reason
from whaleid.model.augment import MEAN, STD
from whaleid.model.heads import ArcFace
from whaleid.model.weights import hub_repo, offline_hint, read_state_dict, safe_torch_load


class GeM(nn.Module):
    """Generalised-mean pooling: ``(mean(x.clamp(eps) ** p)) ** (1 / p)`` over H and W, with learnable ``p``."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        pooled = x.float().clamp(min=self.eps).pow(p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / p).to(x.dtype)


def create_backbone(name: str, pretrained: bool = False, key: str = "model.backbone") -> nn.Module:
    """A timm model by name (or ``hf-hub:<repo>``), without classifier and pooling; unknown names get close
    suggestions. ``pretrained`` loads timm's pretrained weights through the Hugging Face hub cache; weights that are
    neither cached nor downloadable give one line saying how to pre-fetch them."""
    check_timm_name(name, key)
    if pretrained:
        hub_repo(name)  # a model without hub weights: say so before timm tries other sources
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="")
    except OSError as exc:  # huggingface_hub's LocalEntryNotFoundError (offline, not cached) is an OSError
        raise ConfigError(offline_hint(name, exc)) from None


def load_backbone_weights(backbone: nn.Module, path: str | Path, what: str = "model.weights") -> None:
    """Load a local state dict into ``backbone``; explain any key or shape mismatch (naming the param ``what``).
    Never unpickles."""
    path = Path(path)
    state = read_state_dict(path, what)
    own = backbone.state_dict()
    shape_bad = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if shape_bad:
        k = shape_bad[0]
        raise ConfigError(
            f"{what}: {path} does not match the backbone: {len(shape_bad)} tensor(s) differ in shape, "
            f"e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}. Is it for another model?"
        )
    usable = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    if not usable or len(missing) > 0.1 * len(own):
        raise ConfigError(
            f"{what}: {path} does not match the backbone: {len(missing)} of {len(own)} model tensors "
            f"are absent from the file (e.g. {', '.join(missing[:3])}); {len(state) - len(usable)} file "
            f"tensors are unknown (e.g. {', '.join([k for k in state if k not in own][:3])})."
        )
    backbone.load_state_dict(usable, strict=False)


class WhaleNet(nn.Module):
    """Backbone -> GeM -> dropout -> Linear -> BatchNorm1d embedding, plus a margin head for training and, when
    ``arcface.species_weight > 0``, a linear species classifier on the embedding (auxiliary task)."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        arc_cfg: ArcFaceConfig,
        n_classes: int,
        n_species: int = 0,
        input_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(model_cfg.backbone, model_cfg.pretrained)
        if model_cfg.weights:
            load_backbone_weights(self.backbone, model_cfg.weights)
        if input_stats is None and (model_cfg.pretrained or model_cfg.weights):
            cfg = self.backbone.pretrained_cfg
            input_stats = (tuple(cfg.get("mean", MEAN)), tuple(cfg.get("std", STD)))
        # The pipeline normalises images with ImageNet's mean and std; a pretrained backbone trained with other
        # values gets its own through a fixed per-channel affine map (none when they are the same).
        self.input_stats = input_stats if input_stats and input_stats != (MEAN, STD) else None
        if self.input_stats is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in self.input_stats)
            imagenet_mean, imagenet_std = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))
            self.register_buffer("input_scale", imagenet_std / std, persistent=False)
            self.register_buffer("input_shift", (imagenet_mean - mean) / std, persistent=False)
        n_features = self.backbone.num_features
        self.pool = GeM(model_cfg.gem_p, learnable=model_cfg.gem_learnable)
        self.dropout = nn.Dropout(model_cfg.dropout)
        self.neck = nn.Sequential(
            nn.Linear(n_features, model_cfg.embedding_dim), nn.BatchNorm1d(model_cfg.embedding_dim)
        )
        self.head = ArcFace(
            model_cfg.embedding_dim,
            n_classes,
            scale=arc_cfg.scale,
            margin=arc_cfg.margin,
            easy_margin=arc_cfg.easy_margin,
            subcenters=arc_cfg.subcenters,
        )
        self.species_head = (
            nn.Linear(model_cfg.embedding_dim, n_species) if arc_cfg.species_weight > 0 and n_species > 0 else None
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Raw (not normalised) embeddings, (N, embedding_dim), of ImageNet-normalised ``images``."""
        if self.input_stats is not None:
            images = images * self.input_scale.to(images.dtype) + self.input_shift.to(images.dtype)
        features = self.backbone.forward_features(images)
        return self.neck(self.dropout(self.pool(features)))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(images)
        return emb if labels is None else self.head(emb, labels)


MODEL_FORMAT = "whaleid-model-1"


def model_payload(
    model: WhaleNet,
    model_cfg: ModelConfig,
    arc_cfg: ArcFaceConfig,
    *,
    n_classes: int,
    extra: dict | None = None,
    n_species: int = 0,
) -> dict:
    """Everything needed to rebuild ``model``, as plain types + tensors (loads with ``weights_only=True``)."""
    return {
        "format": MODEL_FORMAT,
        "model": to_dict(model_cfg),
        "arcface": to_dict(arc_cfg),
        "n_classes": n_classes,
        "n_species": n_species,
        "input_stats": [list(v) for v in model.input_stats] if model.input_stats else None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[WhaleNet, dict]:
    """Rebuild a model saved by the train stage. Refuses anything that is not plain tensors and types."""
    path = Path(path)
    payload = safe_torch_load(path, str(path), ConfigError)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ConfigError(f"{path}: not a whaleid model file (format {MODEL_FORMAT!r} expected).")
    try:
        model_cfg = ModelConfig(**{**payload["model"], "weights": None, "pretrained": False})
        stats = payload.get("input_stats")
        model = WhaleNet(
            model_cfg,
            ArcFaceConfig(**payload["arcface"]),
            int(payload["n_classes"]),
            int(payload.get("n_species", 0)),
            tuple(tuple(v) for v in stats) if stats else None,
        )
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # noqa: BLE001 - a key missing, a block changed, tensors of other shapes
        reason = short_reason(exc)
        raise ConfigError(f"{path}: a damaged whaleid model file ({type(exc).__name__}: {reason}).") from None
    return model.to(device).eval(), payload
