"""Layer 1: typed, validated configuration loaded from ``params.yaml``.

Every top-level block of ``params.yaml`` maps to one frozen pydantic model (``extra="forbid"``, strict types,
field constraints, ``Literal`` choices). Loading rejects unknown or misspelled keys (with a suggestion), wrong
types and out-of-range values in one :class:`ConfigError` line naming the offending ``block.key``
(:mod:`whaleid.config.base`).

Blocks: ``data``, ``sample``, ``cv``, ``crop``, ``detect``, ``resize`` (:mod:`whaleid.config.data`); ``model``,
``arcface``, ``train``, ``augment``, ``embed``, ``runtime`` (:mod:`whaleid.config.model`); ``knn``, ``blend``,
``local``, ``threshold``, ``pseudo``, ``baseline``, ``ensemble`` (:mod:`whaleid.config.scoring`); ``fold`` (a bare
int); all of them in :class:`~whaleid.config.params.Params`. The names are gathered here, so that code reads
``from whaleid.config import KnnConfig``.
"""

from whaleid.config.base import Block
from whaleid.config.data import CropConfig, CVConfig, DataConfig, DetectConfig, ResizeConfig, SampleConfig
from whaleid.config.model import ArcFaceConfig, AugmentConfig, EmbedConfig, ModelConfig, RuntimeConfig, TrainConfig
from whaleid.config.overrides import apply_overrides, flat_overrides, override_args
from whaleid.config.params import Params, load_params, params_from_dict, replace, runtime_of, to_dict
from whaleid.config.scoring import (
    MAX_THRESHOLDS,
    MEMBER_PATTERN,
    BaselineConfig,
    BlendConfig,
    EnsembleConfig,
    KnnConfig,
    LocalConfig,
    PseudoConfig,
    ThresholdConfig,
    member_fold,
)
from whaleid.core.errors import ConfigError

__all__ = [
    "MAX_THRESHOLDS",
    "MEMBER_PATTERN",
    "ArcFaceConfig",
    "AugmentConfig",
    "BaselineConfig",
    "BlendConfig",
    "Block",
    "CVConfig",
    "ConfigError",
    "CropConfig",
    "DataConfig",
    "DetectConfig",
    "EmbedConfig",
    "EnsembleConfig",
    "KnnConfig",
    "LocalConfig",
    "ModelConfig",
    "Params",
    "PseudoConfig",
    "ResizeConfig",
    "RuntimeConfig",
    "SampleConfig",
    "ThresholdConfig",
    "TrainConfig",
    "apply_overrides",
    "flat_overrides",
    "load_params",
    "member_fold",
    "override_args",
    "params_from_dict",
    "replace",
    "runtime_of",
    "to_dict",
]
