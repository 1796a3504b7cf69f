"""Names in params that only a library can check (timm's model names), checked when a run starts rather than
when the stage that uses them is reached: a typo in ``model.backbone`` stops the first stage, not the train stage
after the detector and the resize have run."""

from __future__ import annotations

import difflib

from whaleid.core.errors import ConfigError

HUB_PREFIX = "hf-hub:"  # a backbone named by its Hugging Face hub repo: timm resolves it when it loads


def check_timm_name(name: str, key: str) -> None:
    """ConfigError naming ``key`` and the closest timm model names, unless timm knows ``name``."""
    import timm  # about a second to import: only where a name is checked

    if name.startswith(HUB_PREFIX) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Close names: {', '.join(close)}." if close else " See timm.list_models() for names."
    raise ConfigError(f"{key}: unknown timm model {name!r}.{hint}")


def check_backbones(model_backbone: str, detect_backbone: str) -> None:
    """Both backbones params name (``model.backbone``, ``detect.backbone``)."""
    check_timm_name(model_backbone, "model.backbone")
    check_timm_name(detect_backbone, "detect.backbone")
