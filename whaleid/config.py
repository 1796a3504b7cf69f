"""Typed, validated configuration loaded from ``params.yaml``.

Every top-level block of ``params.yaml`` maps to one frozen dataclass below. Loading rejects unknown or
misspelled keys (with a suggestion), wrong types and out-of-range values, naming the offending ``block.key``.

Blocks: ``data``, ``sample``, ``cv``, ``fold`` (a bare int), ``crop``, ``resize``, ``model``, ``arcface``, ``train``,
``augment``, ``embed``, ``knn``, ``local``, ``threshold``, ``baseline``, ``ensemble``, ``runtime``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from whaleid.errors import ConfigError

__all__ = ["ConfigError", "Params", "load_params", "params_from_dict", "to_dict"]


def _suggest(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _check_positive(block: str, **values: float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"{block}.{key} must be > 0, got {value!r}.")


def _check_choice(block: str, key: str, value: str, options: typing.Sequence[str]) -> None:
    if value not in options:
        raise ConfigError(
            f"{block}.{key} must be one of {', '.join(options)}, got {value!r}.{_suggest(value, options)}"
        )


def _check_range(block: str, key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{block}.{key} must be in [{low}, {high}], got {value!r}.")


@dataclass(frozen=True)
class DataConfig:
    """Where the dataset in the Kaggle layout lives, and the largest photo it may hold."""

    dir: str = "data/sample"
    max_megapixels: float = 100.0  # decoding a photo takes 3 bytes a pixel per worker: at most 300 MB by default

    def __post_init__(self) -> None:
        _check_range("data", "max_megapixels", self.max_megapixels, 0.01, 10000.0)


@dataclass(frozen=True)
class SampleConfig:
    """Generated dataset (see ``whaleid.sample``)."""

    n_train: int = 2400
    n_test: int = 800
    n_species: int = 6
    img_size: int = 64
    new_share: float = 0.16
    tail_exponent: float = 2.0
    max_images_per_id: int = 40
    min_images_per_id: int = 1  # e.g. 6: no rare individuals (as in camera-trap, zoo or farm sets)
    mirror_prob: float = 0.15
    jpeg_quality_min: int = 60
    jpeg_quality_max: int = 95
    seed: int = 42

    def __post_init__(self) -> None:
        _check_positive("sample", n_train=self.n_train, n_test=self.n_test, n_species=self.n_species)
        _check_range("sample", "n_species", self.n_species, 1, 26)
        _check_range("sample", "img_size", self.img_size, 16, 4096)
        _check_range("sample", "new_share", self.new_share, 0.0, 0.95)
        if self.tail_exponent <= 1.0:
            raise ConfigError(f"sample.tail_exponent must be > 1 (a Zipf exponent), got {self.tail_exponent!r}.")
        _check_range("sample", "max_images_per_id", self.max_images_per_id, 1, 100000)
        _check_range("sample", "min_images_per_id", self.min_images_per_id, 1, self.max_images_per_id)
        _check_range("sample", "mirror_prob", self.mirror_prob, 0.0, 1.0)
        _check_range("sample", "jpeg_quality_min", self.jpeg_quality_min, 1, 100)
        _check_range("sample", "jpeg_quality_max", self.jpeg_quality_max, self.jpeg_quality_min, 100)


@dataclass(frozen=True)
class CVConfig:
    """Stratified k-fold split on individual_id, and how validation is weighted."""

    n_folds: int = 5
    seed: int = 42
    new_ratio: float = 0.16  # expected share of new individuals in test; weights validation MAP@5
    min_new_share: float = (
        0.16  # hold whole individuals out of a fold's training until its validation has this share new
    )

    def __post_init__(self) -> None:
        _check_range("cv", "n_folds", self.n_folds, 2, 100)
        _check_range("cv", "new_ratio", self.new_ratio, 0.0, 1.0)
        _check_range("cv", "min_new_share", self.min_new_share, 0.0, 0.9)


@dataclass(frozen=True)
class CropConfig:
    """Optional crop of each image to a box (``image,x1,y1,x2,y2`` CSV) before resizing."""

    boxes: str | None = "data/sample/boxes.csv"  # the generator's true boxes; a detector's CSV; None: whole images
    margin: float = 0.1  # grow each box by this share of its width/height on every side

    def __post_init__(self) -> None:
        _check_range("crop", "margin", self.margin, 0.0, 2.0)


RESIZE_FORMATS = ("bmp", "png", "jpg")


@dataclass(frozen=True)
class ResizeConfig:
    """File format of the resized images (stage ``resize``): bmp (lossless, fastest to decode: ~0.006 ms at 64 px
    against png's ~0.14), png (lossless, about half bmp's size) or jpg (``jpeg_quality``; lossy, smallest)."""

    format: str = "bmp"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        _check_choice("resize", "format", self.format, RESIZE_FORMATS)
        _check_range("resize", "jpeg_quality", self.jpeg_quality, 1, 100)


@dataclass(frozen=True)
class ModelConfig:
    """Backbone + GeM pooling + embedding neck."""

    backbone: str = "test_resnet"
    pretrained: bool = False  # timm's pretrained weights from the Hugging Face hub (cache, HF_HOME, HF_HUB_OFFLINE)
    weights: str | None = None  # or a local .safetensors / .pt state dict
    img_size: int = 64
    embedding_dim: int = 128
    gem_p: float = 3.0
    gem_learnable: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_positive("model", embedding_dim=self.embedding_dim, gem_p=self.gem_p)
        _check_range("model", "img_size", self.img_size, 16, 4096)
        _check_range("model", "dropout", self.dropout, 0.0, 0.99)
        if self.pretrained and self.weights:
            raise ConfigError("model.pretrained and model.weights are both set: choose the hub's weights "
                              "(pretrained: true) or a local file (weights: PATH), not both.")  # fmt: skip


@dataclass(frozen=True)
class ArcFaceConfig:
    """Additive angular margin head (ArcFace)."""

    scale: float = 20.0
    margin: float = 0.15
    easy_margin: bool = False
    label_smoothing: float = 0.0
    subcenters: int = 1  # sub-center ArcFace: centres per class (1 = plain ArcFace)
    dynamic_margin: bool = False  # per-class margin from class frequency: rare -> margin, frequent -> margin_min
    margin_min: float = 0.05
    margin_power: float = 0.25  # margin follows count ** -margin_power between margin_min and margin
    margin_warmup_epochs: float = 0.0  # margins ramp linearly from 0 over these epochs
    species_weight: float = 0.0  # weight of an auxiliary species cross-entropy on the embedding (0 = off)

    def __post_init__(self) -> None:
        _check_positive("arcface", scale=self.scale)
        _check_range("arcface", "margin", self.margin, 0.0, 1.5)
        _check_range("arcface", "label_smoothing", self.label_smoothing, 0.0, 0.99)
        _check_range("arcface", "subcenters", self.subcenters, 1, 64)
        _check_range("arcface", "margin_min", self.margin_min, 0.0, self.margin)
        _check_positive("arcface", margin_power=self.margin_power)
        if self.margin_warmup_epochs < 0:
            raise ConfigError(f"arcface.margin_warmup_epochs must be >= 0, got {self.margin_warmup_epochs!r}.")
        if self.species_weight < 0:
            raise ConfigError(f"arcface.species_weight must be >= 0 (0 disables it), got {self.species_weight!r}.")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: AdamW with linear warm-up then cosine decay, stepped per batch."""

    epochs: int = 25
    batch_size: int = 64
    lr: float = 3e-3
    head_lr: float = 1e-2
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 5.0
    eval_every: int = 1
    seed: int = 42

    def __post_init__(self) -> None:
        _check_positive("train", epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, head_lr=self.head_lr)
        if self.batch_size < 2:
            raise ConfigError(f"train.batch_size must be >= 2 (BatchNorm needs two images per batch), got "
                              f"{self.batch_size!r}.")  # fmt: skip
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay!r}.")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ConfigError(f"train.warmup_epochs must be in [0, train.epochs], got {self.warmup_epochs!r}.")
        _check_range("train", "min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0 (0 disables it), got {self.grad_clip!r}.")
        if self.eval_every < 0:
            raise ConfigError(f"train.eval_every must be >= 0 (0 disables it), got {self.eval_every!r}.")


AUGMENT_BACKENDS = ("torch", "albumentations")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations. Probabilities are in [0, 1]; 0 switches a transform off. ``backend``: torch
    (batched on the training device, see ``whaleid.augment``) or albumentations (per image in the DataLoader)."""

    backend: str = "torch"
    hflip: float = 0.0
    affine: float = 0.8
    rotate: float = 15.0
    scale_min: float = 0.85
    scale_max: float = 1.15
    translate: float = 0.08
    color: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    blur: float = 0.1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("augment", "backend", self.backend, AUGMENT_BACKENDS)
        for key in ("hflip", "affine", "color", "blur", "dropout"):
            _check_range("augment", key, getattr(self, key), 0.0, 1.0)
        _check_range("augment", "rotate", self.rotate, 0.0, 180.0)
        _check_positive("augment", scale_min=self.scale_min)
        _check_range("augment", "scale_max", self.scale_max, self.scale_min, 10.0)
        _check_range("augment", "translate", self.translate, 0.0, 0.5)
        _check_range("augment", "brightness", self.brightness, 0.0, 1.0)
        _check_range("augment", "contrast", self.contrast, 0.0, 1.0)


@dataclass(frozen=True)
class EmbedConfig:
    """Embedding extraction."""

    batch_size: int = 256
    flip_tta: bool = False  # embedding = mean of the image's and its mirror's (L2-normalised) embeddings

    def __post_init__(self) -> None:
        _check_positive("embed", batch_size=self.batch_size)


INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")
RERANK_METHODS = ("none", "k_reciprocal")
SCORINGS = ("max", "vote")
THRESHOLD_METHODS = ("sweep", "share")


@dataclass(frozen=True)
class KnnConfig:
    """Faiss inner-product search (see ``whaleid.retrieval``)."""

    k: int = 50
    index: str = "flat"
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    ivf_nlist: int = 1024
    ivf_nprobe: int = 32
    pq_m: int = 64  # ivfpq: bytes per vector (product-quantiser sub-vectors); a divisor of the embedding size
    rerank: str = "none"  # none | k_reciprocal (whaleid.rerank): the top-k re-ordered by k-reciprocal encoding
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3  # weight of the original distance; 1 = the plain cosine

    def __post_init__(self) -> None:
        _check_positive("knn", k=self.k, hnsw_m=self.hnsw_m, hnsw_ef_search=self.hnsw_ef_search)
        _check_positive("knn", ivf_nlist=self.ivf_nlist, ivf_nprobe=self.ivf_nprobe, pq_m=self.pq_m)
        _check_choice("knn", "index", self.index, INDEX_TYPES)
        _check_choice("knn", "rerank", self.rerank, RERANK_METHODS)
        _check_positive("knn", rerank_k1=self.rerank_k1, rerank_k2=self.rerank_k2)
        _check_range("knn", "rerank_k2", self.rerank_k2, 1, self.rerank_k1 + 1)
        _check_range("knn", "rerank_lambda", self.rerank_lambda, 0.0, 1.0)


@dataclass(frozen=True)
class BlendConfig:
    """kNN + classifier blend (``whaleid.blend``): each candidate's score is ``knn_weight * cosine to its nearest
    gallery photo + (1 - knn_weight) * cosine to its ArcFace class centre``; 1 = kNN only (nothing computed)."""

    knn_weight: float = 0.8
    extra_classes: int = 5  # classes nearest by centre cosine added as candidates when absent from the top-k

    def __post_init__(self) -> None:
        _check_range("blend", "knn_weight", self.knn_weight, 0.0, 1.0)
        _check_range("blend", "extra_classes", self.extra_classes, 0, 1000)


@dataclass(frozen=True)
class PseudoConfig:
    """Pseudo-label rounds (stage ``pseudo``, ``whaleid.pseudo``): each round retrains the ``fold`` model with the
    previous round's most confident test predictions of known individuals added to its training set."""

    rounds: int = 0  # 0: off
    max_share: float = 0.3  # at most this share of the test photos per round, the most confident first
    min_margin: float = 0.0  # top-1 candidate's score must beat the second one's by this much

    def __post_init__(self) -> None:
        _check_range("pseudo", "rounds", self.rounds, 0, 20)
        _check_range("pseudo", "max_share", self.max_share, 0.0, 1.0)
        _check_range("pseudo", "min_margin", self.min_margin, 0.0, 2.0)


MAX_THRESHOLDS = 10_000  # the sweep scores every threshold at once: (queries x thresholds) memory


@dataclass(frozen=True)
class ThresholdConfig:
    """The prediction rule (``whaleid.predict``): how candidates are scored, and how the new_individual threshold
    is fitted on validation (grid swept, scores weighted by ``cv.new_ratio``)."""

    scoring: str = "max"  # rank individuals by their best similarity (max) or a weighted vote over the top-k
    vote_power: float = 4.0  # vote weight of a neighbour = similarity ** vote_power
    start: float = 0.0
    stop: float = 1.0
    step: float = 0.05
    method: str = "sweep"  # sweep: best weighted CV MAP@5; share: new_individual first for cv.new_ratio of queries
    per_species: bool = False  # a threshold per (predicted) species; rare species use the global one
    min_species_queries: int = 30  # validation queries a species needs for its own threshold

    def __post_init__(self) -> None:
        _check_choice("threshold", "scoring", self.scoring, SCORINGS)
        _check_positive("threshold", vote_power=self.vote_power)
        _check_positive("threshold", step=self.step, min_species_queries=self.min_species_queries)
        _check_choice("threshold", "method", self.method, THRESHOLD_METHODS)
        if self.stop < self.start:
            raise ConfigError(f"threshold.stop ({self.stop}) must be >= threshold.start ({self.start}).")
        if (self.stop - self.start) / self.step > MAX_THRESHOLDS:
            raise ConfigError(f"threshold.step {self.step} makes {(self.stop - self.start) / self.step:.0f} "
                              f"thresholds from {self.start} to {self.stop}; at most {MAX_THRESHOLDS} are swept "
                              f"(step >= {(self.stop - self.start) / MAX_THRESHOLDS:g}).")  # fmt: skip

    def grid(self) -> list[float]:
        """The thresholds swept, ``start`` to ``stop`` inclusive."""
        n = int(round((self.stop - self.start) / self.step)) + 1
        return [round(self.start + i * self.step, 10) for i in range(n)]


@dataclass(frozen=True)
class BaselineConfig:
    """Reference baselines scored like the submission: constant predictions and raw-pixel cosine kNN."""

    pixel_size: int = 16

    def __post_init__(self) -> None:
        _check_range("baseline", "pixel_size", self.pixel_size, 4, 256)


MEMBER_PATTERN = re.compile(r"fold(\d+)|full")


def member_fold(name: str) -> int | None:
    """The validation fold of ensemble member ``name`` (``fold3`` -> 3), None for ``full`` (trained on all)."""
    match = MEMBER_PATTERN.fullmatch(name)
    if match is None:
        raise ConfigError(f"ensemble.members: {name!r} is not a member name; use foldN (N a fold number) or full.")
    return int(match.group(1)) if match.group(1) is not None else None


@dataclass(frozen=True)
class EnsembleConfig:
    """Which trained models embed the test images and the gallery for the submission. Each member is trained by
    its own DVC stage (``member@foldN``); the ``fold`` model is trained by the ``train`` stage."""

    members: list[str] = field(default_factory=list)  # extra models: foldN (trained without fold N) or full (all)
    fold_model: bool = True  # the `fold` model is a member of the submission ensemble (false: members only)

    def __post_init__(self) -> None:
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"ensemble.members lists a model twice: {self.members!r}.")
        for name in self.members:
            member_fold(name)
        if not self.fold_model and not self.members:
            raise ConfigError("ensemble.fold_model is false but ensemble.members is empty: no model to submit with.")


LOCAL_METHODS = ("none", "sift", "orb")


@dataclass(frozen=True)
class LocalConfig:
    """Local-feature matching fused with the embedding (``whaleid.local``, stages ``keypoints`` and ``local``)."""

    method: str = "sift"  # none | sift | orb
    max_side: int = 256  # images resized so their longer side is this before keypoints are found
    max_keypoints: int = 256  # strongest keypoints kept per image
    ratio: float = 0.8  # Lowe's ratio test
    ransac_px: float = 8.0  # RANSAC reprojection tolerance, pixels at max_side
    top_pairs: int = 20  # nearest gallery images matched per query

    def __post_init__(self) -> None:
        _check_choice("local", "method", self.method, LOCAL_METHODS)
        _check_range("local", "max_side", self.max_side, 32, 4096)
        _check_range("local", "max_keypoints", self.max_keypoints, 8, 100000)
        _check_range("local", "ratio", self.ratio, 0.1, 1.0)
        _check_positive("local", ransac_px=self.ransac_px, top_pairs=self.top_pairs)


DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class RuntimeConfig:
    """How to run, not what to compute: changing these never changes results on CPU."""

    device: str = "auto"
    num_workers: int = -1  # DataLoader workers; -1: auto (see whaleid.embed.resolve_workers)
    n_jobs: int = -1

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"runtime.device must be auto, cpu, cuda or cuda:N, got {self.device!r}.")
        if self.num_workers < -1:
            raise ConfigError(f"runtime.num_workers must be >= 0, or -1 for auto, got {self.num_workers!r}.")
        if self.n_jobs == 0:
            raise ConfigError("runtime.n_jobs must be non-zero (-1 uses every core).")


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    fold: int = 0
    crop: CropConfig = field(default_factory=CropConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    arcface: ArcFaceConfig = field(default_factory=ArcFaceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        for name in self.ensemble.members:
            f = member_fold(name)
            if f is not None and not 0 <= f < self.cv.n_folds:
                raise ConfigError(f"ensemble.members: {name} names fold {f}, outside [0, cv.n_folds) = "
                                  f"[0, {self.cv.n_folds}).")  # fmt: skip
            if f == self.fold:
                raise ConfigError(f"ensemble.members lists {name}, the `fold` model, which the train stage trains "
                                  f"already; list only other folds (or change fold).")  # fmt: skip
        if self.pseudo.rounds and (self.ensemble.members or not self.ensemble.fold_model):
            raise ConfigError("pseudo.rounds retrains the `fold` model alone and submits with it; set "
                              "ensemble.members: [] and ensemble.fold_model: true, or pseudo.rounds: 0.")  # fmt: skip
        if not 0 <= self.fold < self.cv.n_folds:
            raise ConfigError(
                f"fold must be in [0, cv.n_folds) = [0, {self.cv.n_folds}), got {self.fold!r}. "
                f"Use e.g. `dvc exp run -S fold={self.cv.n_folds - 1}` or raise cv.n_folds."
            )


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    raise TypeError(f"unsupported annotation {annotation!r}")  # pragma: no cover - programming error


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is list:
        return f"a list of {_type_name(typing.get_args(annotation)[0])}"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    return "null" if annotation is type(None) else annotation.__name__


# Keys that moved: the old name gets an error naming the new one.
MOVED = {
    "knn.scoring": "threshold.scoring (the prediction rule's block)",
    "knn.vote_power": "threshold.vote_power (the prediction rule's block)",
    "ensemble.folds": "ensemble.members, as names: [fold1, fold2] (each trained by its own stage member@foldN)",
    "ensemble.full_fit": "ensemble.members: [full] (with ensemble.fold_model: false to submit with the full fit alone)",
}


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _scalar_types(annotation: Any) -> tuple:
    origin = typing.get_origin(annotation)
    return typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)


def build_block(cls: type, raw: Any, block: str) -> Any:
    """Build dataclass ``cls`` from the mapping ``raw``, naming ``block.key`` in every error."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{block} must be a mapping of keys to values, got {type(raw).__name__}: {raw!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if f"{block}.{key}" in MOVED:
            raise ConfigError(f"{block}.{key} has moved: use {MOVED[f'{block}.{key}']}.")
        if key not in names:
            raise ConfigError(f"Unknown key {block}.{key}.{_suggest(str(key), names)} Valid keys: {', '.join(names)}.")
        if isinstance(value, float) and hints[key] is int and value.is_integer():
            value = int(value)
        if isinstance(value, str) and float in _scalar_types(hints[key]) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads `3e-3` as a string; DVC and YAML 1.2 read it as a number
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{block}.{key} must be {_type_name(hints[key])}, got {type(value).__name__} {value!r}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{block}.{key} must be a finite number, got {value!r}.")
        values[key] = value
    return cls(**values)


def params_from_dict(raw: Any) -> Params:
    """Validate a parsed ``params.yaml`` mapping into :class:`Params`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params must be a mapping of blocks, got {type(raw).__name__}.")
    hints = typing.get_type_hints(Params)
    names = [f.name for f in dataclasses.fields(Params)]
    blocks: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(
                f"Unknown params block {key!r}.{_suggest(str(key), names)} Valid blocks: {', '.join(names)}."
            )
        if key == "fold":
            if not _type_ok(value, int):
                raise ConfigError(f"fold must be int, got {type(value).__name__} {value!r}.")
            blocks[key] = value
        else:
            blocks[key] = build_block(hints[key], value, key)
    return Params(**blocks)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file (``yaml.safe_load``: no code is ever run)."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        return params_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """A plain, JSON-able dict of a config dataclass."""
    return dataclasses.asdict(obj)


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
