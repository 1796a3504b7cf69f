"""A Hugging Face hub cache built locally, laid out as huggingface_hub writes it, for offline pretrained loading."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file


def build_hub_cache(home: Path, backbone: str, repo_id: str, commit: str = "0" * 40) -> Path:
    """``home``/hub holding ``model.safetensors`` of ``repo_id`` for timm model ``backbone``, with weights that
    differ from any fresh initialisation; returns the weights file."""
    torch.manual_seed(1234)
    state = timm.create_model(backbone, pretrained=False).state_dict()
    state = {k: (v + torch.randn_like(v) if v.is_floating_point() else v) for k, v in state.items()}
    # BatchNorm variances stay positive, as in any real checkpoint (a negative one makes NaN in evaluation mode).
    state = {k: (v.abs() + 0.1 if k.endswith("running_var") else v) for k, v in state.items()}
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    save_file(state, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"
