"""Overrides: a recipe file of params (``params/competition.yaml``) as ``-S block.key=value`` arguments for
``dvc exp run``, every key checked against params.yaml first (``whaleid overrides``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from whaleid.config.base import suggest
from whaleid.config.params import params_from_dict, read_yaml
from whaleid.core.errors import ConfigError


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
            raise ConfigError(f"{dotted}: params.yaml has no such key.{suggest(leaf, list(node))}")
        node[leaf] = value
    return out


def override_args(path: str | Path, params_path: str | Path = "params.yaml") -> list[str]:
    """The ``-S key=value`` arguments of ``dvc exp run`` that apply the overrides file ``path`` (nested YAML, the
    layout of params.yaml) to ``params_path``, after checking that the result is valid params. Values are written
    as compact JSON (valid YAML without spaces), so the arguments survive the shell's word splitting."""
    path = Path(path)
    flat = flat_overrides(read_yaml(path))
    try:
        params_from_dict(apply_overrides(read_yaml(Path(params_path)), flat))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    args = []
    for dotted, value in flat.items():
        args += ["-S", f"{dotted}={json.dumps(value, separators=(',', ':'))}"]
    return args
