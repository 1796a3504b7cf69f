"""All of params.yaml as one :class:`Params` (every block typed, unknown blocks refused), and loading it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, model_validator

from whaleid.config.base import Block, suggest
from whaleid.config.data import CropConfig, CVConfig, DataConfig, DetectConfig, ResizeConfig, SampleConfig
from whaleid.config.model import ArcFaceConfig, AugmentConfig, EmbedConfig, ModelConfig, RuntimeConfig, TrainConfig
from whaleid.config.scoring import (
    BaselineConfig,
    BlendConfig,
    EnsembleConfig,
    KnnConfig,
    LocalConfig,
    PseudoConfig,
    ThresholdConfig,
    member_fold,
)
from whaleid.config.yamlfile import read_yaml
from whaleid.core.errors import ConfigError
from whaleid.core.runtime import Runtime


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
                f"Unknown params block {key!r}.{suggest(str(key), fields)} Valid blocks: {', '.join(fields)}."
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
    """Read and validate a params file (bounded safe YAML, :mod:`whaleid.config.yamlfile`: no code is ever run)."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        return params_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def runtime_of(params: Params) -> Runtime:
    """How the pipeline's stages run their per-photo work: ``runtime.n_jobs``, ``runtime.device`` and
    ``data.max_megapixels``."""
    return Runtime(
        n_jobs=params.runtime.n_jobs, max_megapixels=params.data.max_megapixels, device=params.runtime.device
    )
