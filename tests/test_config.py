"""params.yaml validation: unknown keys (with suggestions), wrong types, ranges, broken YAML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from whaleid.config import Params, ThresholdConfig, load_params, params_from_dict
from whaleid.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_load() -> None:
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params) and params.knn.k == 50


def test_defaults_match_params_yaml() -> None:
    """The dataclass defaults document params.yaml; they must not drift apart."""
    assert load_params(ROOT / "params.yaml") == Params()


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(ConfigError, match=r"Unknown key train\.lerning_rate") as info:
        params_from_dict({"train": {"lerning_rate": 0.1}})
    with pytest.raises(ConfigError, match=r"Did you mean 'margin'"):
        params_from_dict({"arcface": {"margn": 0.2}})
    assert "Valid keys" in str(info.value)


def test_unknown_block_suggests_closest() -> None:
    with pytest.raises(ConfigError, match=r"Unknown params block 'trian'.*Did you mean 'train'"):
        params_from_dict({"trian": {}})


def test_wrong_type_named() -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs must be int, got str 'ten'"):
        params_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"model\.gem_learnable must be bool"):
        params_from_dict({"model": {"gem_learnable": "yes"}})


@pytest.mark.parametrize(
    ("block", "key", "value"),
    [
        ("train", "lr", 0.0),
        ("train", "lr", -1e-3),
        ("train", "epochs", 0),
        ("train", "batch_size", -4),
        ("embed", "batch_size", 0),
        ("knn", "k", 0),
    ],
)
def test_non_positive_rejected(block: str, key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"{block}\.{key} must be > 0"):
        params_from_dict({block: {key: value}})


@pytest.mark.parametrize("fold", [-1, 5, 9])
def test_fold_out_of_range(fold: int) -> None:
    with pytest.raises(ConfigError, match=r"fold must be in \[0, cv.n_folds\) = \[0, 5\)"):
        params_from_dict({"fold": fold})


def test_fold_within_more_folds() -> None:
    assert params_from_dict({"fold": 7, "cv": {"n_folds": 8}}).fold == 7


def test_unknown_index_type() -> None:
    with pytest.raises(ConfigError, match=r"knn\.index must be one of flat, hnsw, ivf, ivfpq, got 'hnws'.*'hnsw'"):
        params_from_dict({"knn": {"index": "hnws"}})


@pytest.mark.parametrize(
    ("block", "key", "value", "hint"),
    [
        ("augment", "backend", "albumentation", "'albumentations'"),
        ("augment", "backend", "kornia", r"\."),
        ("resize", "format", "bpm", "'bmp'"),
        ("resize", "format", "webp", r"\."),
    ],
)
def test_unknown_choice_names_the_options(block: str, key: str, value: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=rf"{block}\.{key} must be one of .*got '{value}'.*{hint}"):
        params_from_dict({block: {key: value}})


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_yaml_objects_are_not_constructed(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train: !!python/object/apply:os.system ['echo pwned']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_int_accepted_for_float_and_integral_float_for_int() -> None:
    params = params_from_dict({"arcface": {"scale": 30}, "train": {"epochs": 3.0}})
    assert params.arcface.scale == 30 and params.train.epochs == 3 and isinstance(params.train.epochs, int)


def test_threshold_grid_inclusive() -> None:
    assert ThresholdConfig(start=0.2, stop=0.4, step=0.1).grid() == [0.2, 0.3, 0.4]
    assert yaml.safe_dump(ThresholdConfig().grid())  # plain floats


@pytest.mark.parametrize(
    "block,key,new",
    [
        ("knn", "scoring", "threshold.scoring"),
        ("knn", "vote_power", "threshold.vote_power"),
        ("ensemble", "folds", "ensemble.members"),
        ("ensemble", "full_fit", "ensemble.members: [full]"),
    ],
)
def test_moved_keys_name_their_new_place(block: str, key: str, new: str) -> None:
    with pytest.raises(ConfigError, match=rf"{block}\.{key} has moved: use {re.escape(new)}"):
        params_from_dict({block: {key: 1}})


def test_ensemble_members() -> None:
    params = params_from_dict({"fold": 2, "ensemble": {"members": ["fold0", "full", "fold4"]}})
    assert params.ensemble.members == ["fold0", "full", "fold4"]
    for members, message in (
        (["fold2"], "the `fold` model"),  # the train stage trains it already
        (["fold5"], r"fold 5, outside \[0, cv.n_folds\)"),
        (["fold1", "fold1"], "twice"),
        (["best"], "use foldN .* or full"),
        (["fold-1"], "use foldN"),
    ):
        with pytest.raises(ConfigError, match=message):
            params_from_dict({"fold": 2, "ensemble": {"members": members}})
    with pytest.raises(ConfigError, match="no model to submit with"):
        params_from_dict({"ensemble": {"fold_model": False}})


def test_yaml_1_1_float_strings_are_numbers_as_dvc_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 3e-3\n  head_lr: 1E-2\narcface:\n  scale: 3.0e+1\n", encoding="utf-8")
    params = load_params(path)
    assert params.train.lr == 0.003 and params.train.head_lr == 0.01 and params.arcface.scale == 30.0
    with pytest.raises(ConfigError, match="train.lr must be float"):
        params_from_dict({"train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="train.epochs must be int"):
        params_from_dict({"train": {"epochs": "3e1"}})  # only float keys take number text


def test_threshold_step_that_would_sweep_millions_is_refused() -> None:
    from whaleid.config import MAX_THRESHOLDS, ThresholdConfig

    with pytest.raises(
        ConfigError,
        match=r"threshold.step 1e-06 makes 1000000 thresholds from 0.0 to 1.0; at most 10000 .*\(step >= 0\.0001\)",
    ):
        ThresholdConfig(step=0.000001)
    assert len(ThresholdConfig(step=1.0 / MAX_THRESHOLDS).grid()) == MAX_THRESHOLDS + 1


def test_batch_size_that_does_not_split_over_nproc_is_refused_with_the_params() -> None:
    # Caught when params.yaml is read (every stage, `whaleid check`), not when torchrun has started N processes.
    with pytest.raises(ConfigError, match=r"train.batch_size 30 does not divide into runtime.nproc=4 processes"):
        params_from_dict({"train": {"batch_size": 30}, "runtime": {"nproc": 4}})
    assert params_from_dict({"train": {"batch_size": 32}, "runtime": {"nproc": 4}}).runtime.nproc == 4


def test_batch_size_one_is_refused_before_training() -> None:
    from whaleid.config import TrainConfig

    with pytest.raises(ConfigError, match=r"train.batch_size must be >= 2 \(BatchNorm"):
        TrainConfig(batch_size=1)
    assert TrainConfig(batch_size=2).batch_size == 2


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(value: float) -> None:
    with pytest.raises(ConfigError, match=r"train.lr must be a finite number"):
        params_from_dict({"train": {"lr": value}})


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_clear_error() -> None:
    from whaleid.core.device import select_device

    with pytest.raises(
        ConfigError, match=r"runtime.device is 'cuda' but no CUDA device is available; use auto or cpu"
    ) as info:
        select_device("cuda")
    assert "\n" not in str(info.value)


def _bomb(levels: int = 9, width: int = 9) -> str:
    """The classic alias bomb: each level an alias list of the one before, width ** levels values in all."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + f"\ntrain:\n  epochs: *a{levels}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_bomb(), "once its aliases"),  # 9 ** 9 = 387 million values
        ("a: &a [1, *a]\n", "once its aliases"),  # a cycle
        ("train: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 32 levels deep"),
        (
            "train:\n  epochs: 3\n  lr: 0.1\n  epochs: 4\n",
            "line 4: 'epochs' is given twice in one mapping \\(first on line 2\\)",
        ),
        ("train:\n  epochs: 3\nmodel:\n  img_size: 64\ntrain:\n  lr: 0.1\n", "line 5: 'train' is given twice"),
    ],
)
def test_hostile_yaml_is_refused_in_one_line_in_bounded_time(tmp_path: Path, text: str, message: str) -> None:
    import resource
    import time

    from whaleid.config.overrides import override_args

    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    started, peak = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for read in (load_params, override_args):
        with pytest.raises(ConfigError, match=message) as err:
            read(path)
        assert "\n" not in str(err.value) and len(str(err.value)) < 300 and str(path) in str(err.value)
    # Generous bounds (shared machines): the unbounded loader took 8 s and 1.6 GB on a 10 KB bomb.
    assert time.perf_counter() - started < 5.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB


def test_merge_keys_and_a_key_repeated_in_different_mappings_still_load(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("base: &base {epochs: 3, lr: 0.1}\ntrain:\n  <<: *base\n  lr: 0.2\nmodel:\n  img_size: 64\n")
    from whaleid.config.yamlfile import read_yaml

    assert read_yaml(path)["train"] == {"epochs": 3, "lr": 0.2}  # the mapping's own key wins over the merged one
    with pytest.raises(ConfigError, match="Unknown params block 'base'"):
        load_params(path)  # `base` is no params block: refused as any unknown block is


def _blocks() -> list[type]:
    from pydantic import BaseModel

    seen, todo = [], [Params]
    while todo:
        model = todo.pop()
        seen.append(model)
        for field in model.model_fields.values():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in seen:
                todo.append(kind)
    return seen


def test_every_numeric_param_has_a_lower_and_an_upper_bound() -> None:
    # A new number without bounds fails here: params.yaml is hostile input (model.embedding_dim: 100000000 once
    # passed every check). Bounds come from pydantic's ge/gt/le/lt constraints on the field.
    unbounded = []
    for block in _blocks():
        for name, field in block.model_fields.items():
            if field.annotation not in (int, float) or (block is Params and name == "fold"):
                continue  # fold: bounded by its validator, [0, cv.n_folds)
            bounds = {type(m).__name__ for m in field.metadata}
            if not ({"Ge", "Gt"} & bounds and {"Le", "Lt"} & bounds):
                unbounded.append(f"{block.__name__}.{name}")
    assert not unbounded, unbounded
    assert len([b for b in _blocks()]) >= 15  # the walk reached the blocks, not only Params


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.embedding_dim", 100_000_000, "model.embedding_dim must be <= 8192, got 100000000"),
        ("knn.k", 10**9, "knn.k must be <= 10000"),
        ("train.seed", -1, "train.seed must be in [0, 4294967295], got -1"),
        ("fold", 1000, "fold must be in [0, cv.n_folds) = [0, 5)"),
    ],
)
def test_absurd_numbers_are_refused_naming_the_key_and_the_bound(key: str, value: int, message: str) -> None:
    raw: dict = {}
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        params_from_dict(raw)
