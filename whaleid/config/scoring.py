"""The scoring and prediction blocks of params.yaml: ``knn``, ``blend``, ``local``, ``threshold``, ``pseudo``,
``baseline`` and ``ensemble``."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from whaleid.config.base import Block, Share, span
from whaleid.core.errors import ConfigError


class KnnConfig(Block):
    """Faiss inner-product search (see ``whaleid.retrieval.search``), optionally re-ranked (``whaleid.retrieval.rerank``)."""

    block: ClassVar[str] = "knn"
    k: int = Field(50, gt=0, le=10_000)
    index: Literal["flat", "hnsw", "ivf", "ivfpq"] = "flat"
    hnsw_m: int = Field(32, gt=0, le=256)
    hnsw_ef_search: int = Field(128, gt=0, le=65_536)
    ivf_nlist: int = Field(1024, gt=0, le=1_048_576)
    ivf_nprobe: int = Field(32, gt=0, le=65_536)
    pq_m: int = Field(
        64, gt=0, le=1024
    )  # ivfpq: bytes per vector (product-quantiser sub-vectors); a divisor of the embedding size
    rerank: Literal["none", "k_reciprocal"] = "none"  # the top-k re-ordered by k-reciprocal encoding
    rerank_k1: int = Field(20, gt=0, le=1000)
    rerank_k2: int = Field(6, gt=0, le=1000)
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
    vote_power: float = Field(4.0, gt=0, le=100)  # vote weight of a neighbour = similarity ** vote_power
    start: float = span(0.0, -10, 10)
    stop: float = span(1.0, -10, 10)
    step: float = Field(0.05, gt=0, le=1)
    method: Literal["sweep", "share"] = "sweep"  # sweep: best weighted CV MAP@5; share: cv.new_ratio new first
    per_species: bool = False  # a threshold per (predicted) species; rare species use the global one
    min_species_queries: int = Field(30, gt=0, le=1_000_000)  # validation queries a species needs for its own threshold

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
    """Local-feature matching fused with the embedding (``whaleid.retrieval.matching``, stages ``keypoints`` and
    ``local``): ``method`` matches each query's ``top_pairs`` best candidates, and ``refine`` (a cascade) matches
    its ``refine_pairs`` best again with a learned matcher."""

    block: ClassVar[str] = "local"
    method: Literal["none", "sift", "orb", "aliked", "disk", "xfeat"] = "sift"
    max_side: int = span(256, 32, 4096)  # images resized so their longer side is this before keypoints are found
    max_keypoints: int = span(256, 8, 100000)  # strongest keypoints kept per image
    ratio: float = span(0.8, 0.1, 1.0)  # Lowe's ratio test (sift, orb)
    ransac_px: float = Field(8.0, gt=0, le=1000)  # RANSAC reprojection tolerance, pixels at max_side (sift, orb)
    top_pairs: int = Field(50, gt=0, le=1000)  # nearest gallery images matched per query
    refine: Literal["none", "aliked", "disk", "xfeat"] = (
        "none"  # a learned matcher for each query's best refine_pairs too
    )
    refine_pairs: int = span(5, 1, 1000)
    match_confidence: float = span(
        0.1, 0.0, 1.0
    )  # LightGlue: matches above this confidence count (aliked, disk, xfeat)
    learned_score: Literal["count", "confidence"] = "count"  # a learned pair's score: its matches, or their confidence
    early_stop: bool = True  # LightGlue stops early on easy pairs and prunes unmatchable points (pairs one by one)
    match_batch: int = span(16, 1, 4096)  # learned pairs per batch without early_stop
    calibration: Literal["logistic", "isotonic"] = "isotonic"  # how the scores become one probability
    # A frozen pretrained backbone (a timm name) whose global descriptor's cosine is one more fused score
    # (whaleid.model.descriptor); its weights from descriptor_weights (a local file) or timm's hub cache.
    descriptor: str | None = None
    descriptor_weights: str | None = None
    descriptor_size: int = span(224, 32, 1024)  # photos resized to this square for the descriptor

    @model_validator(mode="after")
    def _distinct(self) -> LocalConfig:
        if self.refine != "none" and self.refine == self.method:
            raise ConfigError(
                f"local.refine {self.refine!r} is local.method already: it would match the same pairs "
                "twice. Set local.refine: none, or another learned matcher."
            )
        if self.descriptor_weights is not None and self.descriptor is None:
            raise ConfigError(
                f"local.descriptor_weights is set ({self.descriptor_weights!r}) but local.descriptor is null: name "
                "the backbone the weights are for (e.g. tf_efficientnet_lite0)."
            )
        return self

    @property
    def methods(self) -> list[str]:
        """The local-feature methods that describe photos (keypoints stage), in scoring order; a frozen global
        descriptor (``descriptor``) last."""
        return [m for m in (self.method, self.refine) if m != "none"] + (["descriptor"] if self.descriptor else [])

    @property
    def fuses(self) -> bool:
        return bool(self.methods)
