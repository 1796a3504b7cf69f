"""Training checkpoints: everything a run needs to resume exactly (model, optimiser, scheduler, scaler, torch's RNG
state, the history so far), written atomically after every epoch and resumed only when its ``fingerprint`` (the
training params, data and code; :func:`whaleid.pipeline.members.fingerprint`) matches. A stale, damaged or unsafe
file is ignored with a warning, never unpickled."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from whaleid.core.atomic import save_torch

log = logging.getLogger(__name__)


PAUSE_ENV = "WHALEID_CHECKPOINT_PAUSE"  # seconds to wait after each checkpoint; tests interrupt a run there


@dataclass
class TrainState:
    """What a checkpoint holds besides tensors' owners."""

    epoch: int  # epochs completed
    history: list[dict[str, float]]


def save_checkpoint(
    path: Path,
    fingerprint: str,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: object,
    scaler: torch.amp.GradScaler,
    state: TrainState,
) -> None:
    payload = {
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "history": state.history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    save_torch(path, payload)
    pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
    if pause > 0:  # the interrupt tests' window: a tiny run's epochs last milliseconds
        time.sleep(pause)


def load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint at ``path`` if it exists, loads safely and matches ``fingerprint``; else None."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt or unsafe file: start afresh, never execute it
        log.warning("Ignoring unreadable checkpoint %s (%s); training from scratch.", path, exc)
        return None
    if not isinstance(payload, dict) or payload.get("fingerprint") != fingerprint:
        log.info("Checkpoint %s was made with other params or data; discarding it.", path)
        return None
    return payload
