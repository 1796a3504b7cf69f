"""Typed, validated configuration loaded from ``params.yaml``.

Every top-level block of ``params.yaml`` maps to one frozen pydantic model below (``extra="forbid"``, strict types,
field constraints, ``Literal`` choices). Loading rejects unknown or misspelled keys (with a suggestion), wrong
types and out-of-range values in one :class:`ConfigError` line naming the offending ``block.key``: pydantic's
errors are translated by :func:`_message`.

Blocks: ``data``, ``sample``, ``cv``, ``fold`` (a bare int), ``crop``, ``resize``, ``model``, ``arcface``, ``train``,
``augment``, ``embed``, ``knn``, ``blend``, ``local``, ``threshold``, ``pseudo``, ``baseline``, ``ensemble``,
``runtime``.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from whaleid.core.errors import ConfigError

__all__ = ["ConfigError", "Params", "load_params", "params_from_dict", "replace", "to_dict"]

Positive = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]  # bounds as ints: messages read "> 0", not "> 0.0"
Share = Annotated[float, Field(ge=0.0, le=1.0)]


def span(default: float, low: float, high: float) -> Any:
    """A field with a default, in [low, high]."""
    return Field(default, ge=low, le=high)


def _suggest(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


# Keys that moved: the old name gets an error naming the new one.
MOVED = {
    "knn.scoring": "threshold.scoring (the prediction rule's block)",
    "knn.vote_power": "threshold.vote_power (the prediction rule's block)",
    "ensemble.folds": "ensemble.members, as names: [fold1, fold2] (each trained by its own stage member@foldN)",
    "ensemble.full_fit": "ensemble.members: [full] (with ensemble.fold_model: false to submit with the full fit alone)",
}

_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is list:
        return f"a list of {_type_name(typing.get_args(annotation)[0])}"
    if origin in (typing.Union, __import__("types").UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    return "null" if annotation is type(None) else annotation.__name__


def _scalars(annotation: Any) -> tuple:
    """The plain types a field takes (``int | None`` -> int, NoneType)."""
    if typing.get_origin(annotation) is Annotated:
        return _scalars(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType):
        return tuple(t for a in typing.get_args(annotation) for t in _scalars(a))
    return (annotation,)


def _bounds(field: Any) -> tuple[Any, Any]:
    low = high = None
    for m in field.metadata:
        low = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else low
        high = getattr(m, "le", None) if getattr(m, "le", None) is not None else high
    return low, high


class Block(BaseModel):
    """One block of params.yaml. Building one raises :class:`ConfigError` (one line naming ``block.key``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
    block: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        for key, value in list(values.items()):
            if f"{cls.block}.{key}" in MOVED:
                raise ConfigError(f"{cls.block}.{key} has moved: use {MOVED[f'{cls.block}.{key}']}.")
            field = cls.model_fields.get(key)
            if field is None:
                continue
            kinds = _scalars(field.annotation)
            if isinstance(value, float) and int in kinds and float not in kinds and value.is_integer():
                values[key] = int(value)
            if isinstance(value, str) and float in kinds and _FLOAT_TEXT.fullmatch(value.strip()):
                values[key] = float(value)  # YAML 1.1 reads `3e-3` as a string; DVC and YAML 1.2 read it as a number
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_message(cls, exc, values)) from None

    def check_range(self, key: str, low: float, high: float) -> None:
        """For bounds that depend on other keys (model validators)."""
        value = getattr(self, key)
        if not low <= value <= high:
            raise ConfigError(f"{self.block}.{key} must be in [{low}, {high}], got {value!r}.")


def _message(cls: type[Block], exc: ValidationError, values: dict) -> str:
    """Pydantic's first error as one line in whaleid's words."""
    err = exc.errors(include_url=False)[0]
    kind, loc = err["type"], err["loc"]
    if not loc:  # a model validator's own message
        return str(err.get("ctx", {}).get("error", err["msg"]))
    key = str(loc[0])
    name = f"{cls.block}.{key}"
    if kind == "extra_forbidden":
        names = list(cls.model_fields)
        return f"Unknown key {name}.{_suggest(key, names)} Valid keys: {', '.join(names)}."
    field, value = cls.model_fields[key], values.get(key)
    if kind == "literal_error":
        options = [str(o) for o in typing.get_args(field.annotation)]
        return f"{name} must be one of {', '.join(options)}, got {value!r}.{_suggest(str(value), options)}"
    if kind == "finite_number":
        return f"{name} must be a finite number, got {value!r}."
    hint = f" ({field.description})" if field.description else ""
    if kind == "string_pattern_mismatch":
        return f"{name} must be {field.description}, got {value!r}."
    if kind == "greater_than":
        return f"{name} must be > {err['ctx']['gt']}{hint}, got {value!r}."
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(field)
        if low is not None and high is not None:
            return f"{name} must be in [{low}, {high}]{hint}, got {value!r}."
        bound = f">= {low}" if high is None else f"<= {high}"
        return f"{name} must be {bound}{hint}, got {value!r}."
    if kind == "value_error":
        return str(err["ctx"]["error"])
    return f"{name} must be {_type_name(field.annotation)}, got {type(value).__name__} {value!r}."


class DataConfig(Block):
    """Where the dataset in the Kaggle layout lives, and the largest photo it may hold."""

    block: ClassVar[str] = "data"
    dir: str = "data/sample"
    max_megapixels: float = span(100.0, 0.01, 10000.0)  # decoding takes 3 bytes a pixel per worker: 300 MB by default


class SampleConfig(Block):
    """Generated dataset (see ``whaleid.data.sample``)."""

    block: ClassVar[str] = "sample"
    n_train: Positive = 2400
    n_test: Positive = 800
    n_species: int = span(6, 1, 26)
    img_size: int = span(160, 16, 4096)
    new_share: float = span(0.16, 0.0, 0.95)
    tail_exponent: float = Field(2.0, gt=1, description="a Zipf exponent")
    max_images_per_id: int = span(40, 1, 100000)
    min_images_per_id: int = Field(1, ge=1)  # e.g. 6: no rare individuals (as in camera-trap, zoo or farm sets)
    mirror_prob: Share = 0.15
    jpeg_quality_min: int = span(60, 1, 100)
    jpeg_quality_max: int = span(95, 1, 100)
    subject_min: float = span(0.2, 0.05, 1.0)  # fin base width, share of the photo width (0.55-0.85: fin fills it)
    subject_max: float = span(0.45, 0.05, 1.0)
    off_centre: Share = 1.0  # 0: fin near the centre | 1: anywhere, partly cut off at an edge now and then
    clutter: int = span(6, 0, 50)  # at most this many distractors per photo (rocks, boats, birds, foam, far fins)
    occlusion: Share = 0.3  # chance that splash or debris hides part of the fin
    mark_contrast_min: float = span(0.35, 0.0, 1.0)  # markings at a per-photo contrast between this and 1
    test_boxes: bool = False  # boxes.csv covers test photos too (false: they go to solution_boxes.csv, an answer key)
    seed: int = 42

    @model_validator(mode="after")
    def _order(self) -> SampleConfig:
        self.check_range("min_images_per_id", 1, self.max_images_per_id)
        self.check_range("jpeg_quality_max", self.jpeg_quality_min, 100)
        self.check_range("subject_max", self.subject_min, 1.0)
        return self


class CVConfig(Block):
    """Stratified k-fold split on individual_id, and how validation is weighted."""

    block: ClassVar[str] = "cv"
    n_folds: int = span(5, 2, 100)
    seed: int = 42
    new_ratio: float = span(0.16, 0.0, 1.0)  # expected share of new individuals in test; weights validation MAP@5
    min_new_share: float = span(0.16, 0.0, 0.9)  # hold individuals out of a fold's training until this share is new


class CropConfig(Block):
    """Optional crop of each image to a box (``image,x1,y1,x2,y2`` CSV) before resizing."""

    block: ClassVar[str] = "crop"
    boxes: str | None = "auto"  # auto: <data.dir>/boxes.csv if there is one | a CSV path | None: whole images
    margin: float = span(0.1, 0.0, 2.0)  # grow each box by this share of its width/height on every side


class DetectConfig(Block):
    """Box detector (stage ``detect``, :mod:`whaleid.model.boxnet`): trained on the train photos' boxes, it draws the
    boxes of the photos that have none (the test photos; any photo ``whaleid identify`` is given)."""

    block: ClassVar[str] = "detect"
    use: Literal["auto", "always", "never"] = "auto"  # auto: when the boxes leave test photos without one
    backbone: str = "test_resnet"  # any timm CNN
    pretrained: bool = False  # timm's ImageNet weights from the Hugging Face hub cache
    img_size: int = span(96, 32, 2048)
    epochs: Positive = 8
    batch_size: Positive = 32
    lr: PositiveFloat = 0.003
    holdout: float = span(0.1, 0.0, 0.5)  # share of the boxed train photos held back to measure IoU
    train_crops: Literal["truth", "predicted"] = "truth"  # train photos cropped to their own boxes or the detector's
    seed: int = 42


RESIZE_FORMATS = ("bmp", "png", "jpg")


class ResizeConfig(Block):
    """File format of the resized images (stage ``resize``): bmp (lossless, fastest to decode: ~0.006 ms at 64 px
    against png's ~0.14), png (lossless, about half bmp's size) or jpg (``jpeg_quality``; lossy, smallest)."""

    block: ClassVar[str] = "resize"
    format: Literal["bmp", "png", "jpg"] = "bmp"
    jpeg_quality: int = span(95, 1, 100)


class ModelConfig(Block):
    """Backbone + GeM pooling + embedding neck."""

    block: ClassVar[str] = "model"
    backbone: str = "test_resnet"
    pretrained: bool = False  # timm's pretrained weights from the Hugging Face hub (cache, HF_HOME, HF_HUB_OFFLINE)
    weights: str | None = None  # or a local .safetensors / .pt state dict
    img_size: int = span(96, 16, 4096)
    embedding_dim: Positive = 128
    gem_p: PositiveFloat = 3.0
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
    scale: PositiveFloat = 20.0
    margin: float = span(0.15, 0.0, 1.5)
    easy_margin: bool = False
    label_smoothing: float = span(0.0, 0.0, 0.99)
    subcenters: int = span(1, 1, 64)  # sub-center ArcFace: centres per class (1 = plain ArcFace)
    dynamic_margin: bool = False  # per-class margin from class frequency: rare -> margin, frequent -> margin_min
    margin_min: float = Field(0.05, ge=0)
    margin_power: PositiveFloat = 0.25  # margin follows count ** -margin_power between margin_min and margin
    margin_warmup_epochs: float = Field(0.0, ge=0)  # margins ramp linearly from 0 over these epochs
    species_weight: float = Field(0.0, ge=0, description="0 disables it")  # weight of a species cross-entropy

    @model_validator(mode="after")
    def _margins(self) -> ArcFaceConfig:
        self.check_range("margin_min", 0.0, self.margin)
        return self


class TrainConfig(Block):
    """Optimisation: AdamW with linear warm-up then cosine decay, stepped per batch."""

    block: ClassVar[str] = "train"
    epochs: Positive = 25
    batch_size: Positive = 32
    lr: PositiveFloat = 3e-3
    head_lr: PositiveFloat = 1e-2
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_ratio: float = span(0.01, 0.0, 1.0)
    grad_clip: float = Field(5.0, ge=0, description="0 disables it")
    eval_every: int = Field(5, ge=0, description="0 disables it")  # epochs between validations (and the last)
    eval_images: int = Field(0, ge=0, description="0: all")  # per-epoch validation on a seeded subset this large
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch, not each process's share
    seed: int = 42

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
    """Training augmentations. Probabilities are in [0, 1]; 0 switches a transform off. ``backend``: torch
    (batched on the training device, see ``whaleid.model.augment``) or albumentations (per image in the DataLoader)."""

    block: ClassVar[str] = "augment"
    backend: Literal["torch", "albumentations"] = "torch"
    hflip: Share = 0.0
    affine: Share = 0.8
    rotate: float = span(15.0, 0.0, 180.0)
    scale_min: PositiveFloat = 0.85
    scale_max: float = 1.15
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
    batch_size: Positive = 256
    flip_tta: bool = False  # embedding = mean of the image's and its mirror's (L2-normalised) embeddings


INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")


class KnnConfig(Block):
    """Faiss inner-product search (see ``whaleid.retrieval.search``), optionally re-ranked (``whaleid.retrieval.rerank``)."""

    block: ClassVar[str] = "knn"
    k: Positive = 50
    index: Literal["flat", "hnsw", "ivf", "ivfpq"] = "flat"
    hnsw_m: Positive = 32
    hnsw_ef_search: Positive = 128
    ivf_nlist: Positive = 1024
    ivf_nprobe: Positive = 32
    pq_m: Positive = 64  # ivfpq: bytes per vector (product-quantiser sub-vectors); a divisor of the embedding size
    rerank: Literal["none", "k_reciprocal"] = "none"  # the top-k re-ordered by k-reciprocal encoding
    rerank_k1: Positive = 20
    rerank_k2: Positive = 6
    rerank_lambda: float = span(0.3, 0.0, 1.0)  # weight of the original distance; 1 = the plain cosine

    @model_validator(mode="after")
    def _expansion(self) -> KnnConfig:
        self.check_range("rerank_k2", 1, self.rerank_k1 + 1)
        return self


class BlendConfig(Block):
    """kNN + classifier blend (``whaleid.retrieval.blend``): each candidate's score is ``knn_weight * cosine to its nearest
    gallery photo + (1 - knn_weight) * cosine to its ArcFace class centre``; 1 = kNN only (nothing computed)."""

    block: ClassVar[str] = "blend"
    knn_weight: Share = 0.8
    extra_classes: int = span(5, 0, 1000)  # classes nearest by centre cosine added when absent from the top-k


class PseudoConfig(Block):
    """Pseudo-label rounds (stage ``pseudo``, ``whaleid.pipeline.pseudo``): each round retrains the ``fold`` model with the
    previous round's most confident test predictions of known individuals added to its training set."""

    block: ClassVar[str] = "pseudo"
    rounds: int = span(0, 0, 20)  # 0: off
    max_share: Share = 0.3  # at most this share of the test photos per round, the most confident first
    min_margin: float = span(0.0, 0.0, 2.0)  # top-1 candidate's score must beat the second one's by this much


MAX_THRESHOLDS = 10_000  # the sweep scores every threshold at once: (queries x thresholds) memory


class ThresholdConfig(Block):
    """The prediction rule (``whaleid.rule.predict``): how candidates are scored, and how the new_individual threshold
    is fitted on validation (grid swept, scores weighted by ``cv.new_ratio``)."""

    block: ClassVar[str] = "threshold"
    scoring: Literal["max", "vote"] = "max"  # rank individuals by their best similarity or a weighted vote
    vote_power: PositiveFloat = 4.0  # vote weight of a neighbour = similarity ** vote_power
    start: float = 0.0
    stop: float = 1.0
    step: PositiveFloat = 0.05
    method: Literal["sweep", "share"] = "sweep"  # sweep: best weighted CV MAP@5; share: cv.new_ratio new first
    per_species: bool = False  # a threshold per (predicted) species; rare species use the global one
    min_species_queries: Positive = 30  # validation queries a species needs for its own threshold

    @model_validator(mode="after")
    def _grid_size(self) -> ThresholdConfig:
        if self.stop < self.start:
            raise ConfigError(f"threshold.stop ({self.stop}) must be >= threshold.start ({self.start}).")
        if (self.stop - self.start) / self.step > MAX_THRESHOLDS:
            raise ConfigError(
                f"threshold.step {self.step} makes {(self.stop - self.start) / self.step:.0f} "
                f"thresholds from {self.start} to {self.stop}; at most {MAX_THRESHOLDS} are swept "
                f"(step >= {(self.stop - self.start) / MAX_THRESHOLDS:g})."
            )
        return self

    def grid(self) -> list[float]:
        """The thresholds swept, ``start`` to ``stop`` inclusive."""
        n = int(round((self.stop - self.start) / self.step)) + 1
        return [round(self.start + i * self.step, 10) for i in range(n)]


class BaselineConfig(Block):
    """Reference baselines scored like the submission: constant predictions and raw-pixel cosine kNN."""

    block: ClassVar[str] = "baseline"
    pixel_size: int = span(16, 4, 256)


MEMBER_PATTERN = re.compile(r"fold(\d+)|full")


def member_fold(name: str) -> int | None:
    """The validation fold of ensemble member ``name`` (``fold3`` -> 3), None for ``full`` (trained on all)."""
    match = MEMBER_PATTERN.fullmatch(name)
    if match is None:
        raise ConfigError(f"ensemble.members: {name!r} is not a member name; use foldN (N a fold number) or full.")
    return int(match.group(1)) if match.group(1) is not None else None


class EnsembleConfig(Block):
    """Which trained models embed the test images and the gallery for the submission. Each member is trained by
    its own DVC stage (``member@foldN``); the ``fold`` model is trained by the ``train`` stage."""

    block: ClassVar[str] = "ensemble"
    members: list[str] = []  # extra models: foldN (trained without fold N) or full (all)
    fold_model: bool = True  # the `fold` model is a member of the submission ensemble (false: members only)

    @model_validator(mode="after")
    def _members(self) -> EnsembleConfig:
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"ensemble.members lists a model twice: {self.members!r}.")
        for name in self.members:
            member_fold(name)
        if not self.fold_model and not self.members:
            raise ConfigError("ensemble.fold_model is false but ensemble.members is empty: no model to submit with.")
        return self


class LocalConfig(Block):
    """Local-feature matching fused with the embedding (``whaleid.retrieval.local``, stages ``keypoints`` and ``local``)."""

    block: ClassVar[str] = "local"
    method: Literal["none", "sift", "orb"] = "sift"
    max_side: int = span(256, 32, 4096)  # images resized so their longer side is this before keypoints are found
    max_keypoints: int = span(256, 8, 100000)  # strongest keypoints kept per image
    ratio: float = span(0.8, 0.1, 1.0)  # Lowe's ratio test
    ransac_px: PositiveFloat = 8.0  # RANSAC reprojection tolerance, pixels at max_side
    top_pairs: Positive = 20  # nearest gallery images matched per query


class RuntimeConfig(Block):
    """How to run, not what to compute: changing these never changes results on CPU."""

    block: ClassVar[str] = "runtime"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$", description="auto, cpu, cuda or cuda:N")
    num_workers: int = Field(
        -1, ge=-1, description="-1: auto"
    )  # DataLoader workers (whaleid.model.embed.resolve_workers)
    n_jobs: int = -1  # joblib workers; -1: every core
    nproc: int = span(1, 1, 64)  # training processes on this node; > 1: the train stage runs itself under torchrun

    @model_validator(mode="after")
    def _jobs(self) -> RuntimeConfig:
        if self.n_jobs == 0:
            raise ConfigError("runtime.n_jobs must be non-zero (-1 uses every core).")
        return self


class Params(Block):
    """The whole ``params.yaml``."""

    data: DataConfig = DataConfig()
    sample: SampleConfig = SampleConfig()
    cv: CVConfig = CVConfig()
    fold: int = 0
    crop: CropConfig = CropConfig()
    detect: DetectConfig = DetectConfig()
    resize: ResizeConfig = ResizeConfig()
    model: ModelConfig = ModelConfig()
    arcface: ArcFaceConfig = ArcFaceConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    embed: EmbedConfig = EmbedConfig()
    knn: KnnConfig = KnnConfig()
    blend: BlendConfig = BlendConfig()
    local: LocalConfig = LocalConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    pseudo: PseudoConfig = PseudoConfig()
    baseline: BaselineConfig = BaselineConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _across_blocks(self) -> Params:
        for name in self.ensemble.members:
            f = member_fold(name)
            if f is not None and not 0 <= f < self.cv.n_folds:
                raise ConfigError(
                    f"ensemble.members: {name} names fold {f}, outside [0, cv.n_folds) = [0, {self.cv.n_folds})."
                )
            if f == self.fold:
                raise ConfigError(
                    f"ensemble.members lists {name}, the `fold` model, which the train stage trains "
                    f"already; list only other folds (or change fold)."
                )
        if self.pseudo.rounds and (self.ensemble.members or not self.ensemble.fold_model):
            raise ConfigError(
                "pseudo.rounds retrains the `fold` model alone and submits with it; set "
                "ensemble.members: [] and ensemble.fold_model: true, or pseudo.rounds: 0."
            )
        if self.train.batch_size % self.runtime.nproc:
            raise ConfigError(
                f"train.batch_size {self.train.batch_size} does not divide into runtime.nproc="
                f"{self.runtime.nproc} processes: the global batch must split evenly; choose a multiple "
                f"of {self.runtime.nproc}."
            )
        if not 0 <= self.fold < self.cv.n_folds:
            raise ConfigError(
                f"fold must be in [0, cv.n_folds) = [0, {self.cv.n_folds}), got {self.fold!r}. "
                f"Use e.g. `dvc exp run -S fold={self.cv.n_folds - 1}` or raise cv.n_folds."
            )
        return self


def params_from_dict(raw: Any) -> Params:
    """Validate a parsed ``params.yaml`` mapping into :class:`Params`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params must be a mapping of blocks, got {type(raw).__name__}.")
    fields = Params.model_fields
    blocks: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(
                f"Unknown params block {key!r}.{_suggest(str(key), fields)} Valid blocks: {', '.join(fields)}."
            )
        if key == "fold":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"fold must be int, got {type(value).__name__} {value!r}.")
            blocks[key] = value
            continue
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of keys to values, got {type(value).__name__}: {value!r}.")
        blocks[key] = fields[key].annotation(**value)
    return Params(**blocks)


def replace(block: Block, **changes: Any) -> Any:
    """A validated copy of ``block`` with ``changes`` (``dataclasses.replace`` for these models)."""
    return type(block)(**(dict(block) | changes))


def to_dict(obj: BaseModel) -> dict:
    """A plain, JSON-able dict of a config model."""
    return obj.model_dump()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file (``yaml.safe_load``: no code is ever run)."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        return params_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found.")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def flat_overrides(overrides: Any, prefix: str = "") -> dict[str, Any]:
    """A nested overrides mapping as ``{"block.key": value}`` (values kept as they are, lists included)."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{prefix or 'overrides'} must be a mapping of blocks to keys, got {overrides!r:.80}.")
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out |= flat_overrides(value, dotted)
        else:
            out[dotted] = value
    return out


def apply_overrides(raw: dict, flat: dict[str, Any]) -> dict:
    """A copy of the parsed params ``raw`` with every ``block.key`` of ``flat`` replaced; unknown keys are a
    ConfigError naming them."""
    out = copy.deepcopy(raw)
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"{dotted}: params.yaml has no block {key!r}.")
            node = node[key]
        if leaf not in node:
            raise ConfigError(f"{dotted}: params.yaml has no such key.{_suggest(leaf, list(node))}")
        node[leaf] = value
    return out


def override_args(path: str | Path, params_path: str | Path = "params.yaml") -> list[str]:
    """The ``-S key=value`` arguments of ``dvc exp run`` that apply the overrides file ``path`` (nested YAML, the
    layout of params.yaml) to ``params_path``, after checking that the result is valid params. Values are written
    as compact JSON (valid YAML without spaces), so the arguments survive the shell's word splitting."""
    path = Path(path)
    flat = flat_overrides(_read_yaml(path))
    try:
        params_from_dict(apply_overrides(_read_yaml(Path(params_path)), flat))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    args = []
    for dotted, value in flat.items():
        args += ["-S", f"{dotted}={json.dumps(value, separators=(',', ':'))}"]
    return args
