"""The model and training blocks of params.yaml: ``model``, ``arcface``, ``train``, ``augment``, ``embed`` and
``runtime``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from whaleid.config.base import Block, Share, span
from whaleid.core.errors import ConfigError


class ModelConfig(Block):
    """Backbone + GeM pooling + embedding neck."""

    block: ClassVar[str] = "model"
    backbone: str = "test_resnet"
    pretrained: bool = False  # timm's pretrained weights from the Hugging Face hub (cache, HF_HOME, HF_HUB_OFFLINE)
    weights: str | None = None  # or a local .safetensors / .pt state dict
    img_size: int = span(96, 16, 4096)
    embedding_dim: int = Field(128, gt=0, le=8192)
    gem_p: float = Field(3.0, gt=0, le=20)
    gem_learnable: bool = True
    dropout: float = span(0.0, 0.0, 0.99)

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.pretrained and self.weights:
            raise ConfigError(
                "model.pretrained and model.weights are both set: choose the hub's weights "
                "(pretrained: true) or a local file (weights: PATH), not both."
            )
        return self


class ArcFaceConfig(Block):
    """Additive angular margin head (ArcFace)."""

    block: ClassVar[str] = "arcface"
    scale: float = Field(20.0, gt=0, le=256)
    margin: float = span(0.15, 0.0, 1.5)
    easy_margin: bool = False
    label_smoothing: float = span(0.0, 0.0, 0.99)
    subcenters: int = span(1, 1, 64)  # sub-center ArcFace: centres per class (1 = plain ArcFace)
    dynamic_margin: bool = False  # per-class margin from class frequency: rare -> margin, frequent -> margin_min
    margin_min: float = Field(0.05, ge=0, le=3.14)
    margin_power: float = Field(0.25, gt=0, le=4)  # margin follows count ** -margin_power between margin_min and margin
    margin_warmup_epochs: float = Field(0.0, ge=0, le=10_000)  # margins ramp linearly from 0 over these epochs
    species_weight: float = Field(0.0, ge=0, le=100, description="0 disables it")  # weight of a species cross-entropy

    @model_validator(mode="after")
    def _margins(self) -> ArcFaceConfig:
        self.check_range("margin_min", 0.0, self.margin)
        return self


class TrainConfig(Block):
    """Optimisation: AdamW with linear warm-up then cosine decay, stepped per batch."""

    block: ClassVar[str] = "train"
    epochs: int = Field(25, gt=0, le=10_000)
    batch_size: int = Field(32, gt=0, le=4096)
    lr: float = Field(3e-3, gt=0, le=10)
    head_lr: float = Field(1e-2, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    warmup_epochs: float = Field(1.0, ge=0, le=10_000)
    min_lr_ratio: float = span(0.01, 0.0, 1.0)
    grad_clip: float = Field(5.0, ge=0, le=1e6, description="0 disables it")
    eval_every: int = Field(
        5, ge=0, le=10_000, description="0 disables it"
    )  # epochs between validations (and the last)
    eval_images: int = Field(
        0, ge=0, le=10_000_000, description="0: all"
    )  # per-epoch validation on a seeded subset this large
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch, not each process's share
    freeze: float = span(0.0, 0.0, 1.0)  # share of the backbone's leading layers kept as they start (pretrained)
    seed: int = Field(42, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _batch_and_warmup(self) -> TrainConfig:
        if self.batch_size < 2:
            raise ConfigError(
                f"train.batch_size must be >= 2 (BatchNorm needs two images per batch), got {self.batch_size!r}."
            )
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"train.warmup_epochs must be in [0, train.epochs], got {self.warmup_epochs!r}.")
        return self


class AugmentConfig(Block):
    """Training augmentations. Probabilities are in [0, 1]; 0 switches a transform off. ``backend``: opencv (the
    default: applied with OpenCV to the uint8 batch on the CPU before it goes to the device, see
    ``whaleid.model.augment``), torch (the same parameters, batched on the training device: for a GPU, as in
    ``params/competition.yaml``) or albumentations (per image in the DataLoader)."""

    block: ClassVar[str] = "augment"
    backend: Literal["opencv", "torch", "albumentations"] = "opencv"
    hflip: Share = 0.0
    affine: Share = 0.8
    rotate: float = span(15.0, 0.0, 180.0)
    scale_min: float = Field(0.85, gt=0, le=10)
    scale_max: float = Field(1.15, gt=0, le=10)
    translate: float = span(0.08, 0.0, 0.5)
    color: Share = 0.5
    brightness: Share = 0.2
    contrast: Share = 0.2
    blur: Share = 0.1
    dropout: Share = 0.0

    @model_validator(mode="after")
    def _scales(self) -> AugmentConfig:
        self.check_range("scale_max", self.scale_min, 10.0)
        return self


class EmbedConfig(Block):
    """Embedding extraction."""

    block: ClassVar[str] = "embed"
    batch_size: int = Field(64, gt=0, le=4096)  # channels_last at 96 px on 2 CPU cores: 64 ran 2.9x the images/s of 256
    flip_tta: bool = False  # embedding = mean of the image's and its mirror's (L2-normalised) embeddings


class RuntimeConfig(Block):
    """How to run, not what to compute: changing these never changes results on CPU."""

    block: ClassVar[str] = "runtime"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$", description="auto, cpu, cuda or cuda:N")
    num_workers: int = Field(
        -1, ge=-1, le=256, description="-1: auto"
    )  # DataLoader workers (whaleid.model.embed.resolve_workers)
    n_jobs: int = Field(-1, ge=-1, le=1024, description="-1: every core")  # joblib workers; -1: every core
    nproc: int = span(1, 1, 64)  # training processes on this node; > 1: the train stage runs itself under torchrun

    @model_validator(mode="after")
    def _jobs(self) -> RuntimeConfig:
        if self.n_jobs == 0:
            raise ConfigError("runtime.n_jobs must be non-zero (-1 uses every core).")
        return self
