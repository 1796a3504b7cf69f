"""ArcFace training loop with resumable, atomic per-epoch checkpoints.

* AdamW (backbone at ``lr``, neck/head/GeM at ``head_lr``), per-batch linear warm-up then cosine decay to
  ``min_lr_ratio * lr``.
* Augmentation (``augment.backend``): torch -- the loader only decodes, and :class:`whaleid.augment.BatchAugment`
  transforms each batch on the device; albumentations -- per image in the DataLoader.
* CUDA: autocast in bf16 (fp16 + GradScaler where bf16 is unsupported) and channels_last; CPU: fp32.
* Augmentation randomness depends only on (seed, epoch, step) (torch) or (seed, epoch, image) (albumentations,
  via :class:`EpochSampler`), so results do not depend on the number of workers and a resumed run equals an
  uninterrupted one on CPU.
* A checkpoint (model, optimiser, scheduler, scaler, RNG state, history) is written atomically after every
  epoch; its ``fingerprint`` must match, so a run with other params never resumes from a stale one.
* A non-finite loss stops training with :class:`TrainingDiverged` naming the epoch and step.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from whaleid.augment import BatchAugment, batch_generator, model_input
from whaleid.config import ArcFaceConfig, AugmentConfig, TrainConfig
from whaleid.data import ImageDataset
from whaleid.embed import autocast_dtype, make_loader
from whaleid.io import save_torch
from whaleid.transforms import AsUint8, train_transform

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device is {name!r} but no CUDA device is available; use auto or cpu.")
    return torch.device(name)


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled ``(index, seed)`` pairs, a pure function of (seed, epoch); ``set_epoch`` before iterating."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n)
        seeds = rng.integers(0, 2**31 - 1, size=self.n)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))

    def __len__(self) -> int:
        return self.n


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up from ~0 to 1 over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainState:
    """What a checkpoint holds besides tensors' owners."""

    epoch: int  # epochs completed
    history: list[dict[str, float]]


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, object]]:
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    return [{"params": backbone, "lr": cfg.lr}, {"params": rest, "lr": cfg.head_lr}]


def save_checkpoint(path: Path, fingerprint: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: object, scaler: torch.amp.GradScaler, state: TrainState) -> None:  # fmt: skip
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


def train_model(
    model: nn.Module,
    paths: Sequence[str | Path],
    labels: Sequence[int] | np.ndarray,
    cfg: TrainConfig,
    aug: AugmentConfig,
    img_size: int,
    device: torch.device,
    num_workers: int = 0,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
    species: Sequence[int] | np.ndarray | None = None,
    arc: ArcFaceConfig | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place; return the per-epoch history (loss, lr and whatever ``evaluate`` returns).

    ``evaluate`` is called every ``cfg.eval_every`` epochs and on the last; ``on_epoch`` gets each history row,
    including rows replayed from a checkpoint when resuming. From ``arc``: with ``species`` and
    ``species_weight > 0`` the loss adds ``species_weight`` times the species head's cross-entropy;
    ``margin_warmup_epochs`` ramps the head's margins linearly from 0 to their full value, per batch;
    ``label_smoothing`` goes to the identity cross-entropy.
    """
    torch.manual_seed(cfg.seed)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    arc = arc or ArcFaceConfig()
    species_weight = arc.species_weight
    use_species = species is not None and species_weight > 0 and getattr(model, "species_head", None) is not None
    targets_all = np.stack([np.asarray(labels), np.asarray(species)], axis=1) if use_species else labels
    on_device = aug.backend == "torch"
    transform = AsUint8(img_size) if on_device else train_transform(img_size, aug, cfg.seed)
    dataset = ImageDataset(paths, transform, targets_all)
    batch_augment = BatchAugment(aug) if on_device else None
    sampler = EpochSampler(len(dataset), cfg.seed)
    loader = make_loader(dataset, cfg.batch_size, num_workers, device, sampler=sampler, drop_last=len(dataset) > cfg.batch_size,
                         persistent=True, training=True)  # fmt: skip
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, total, warmup, cfg.min_lr_ratio))
    dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss()
    id_criterion = nn.CrossEntropyLoss(label_smoothing=arc.label_smoothing)
    margin_steps = arc.margin_warmup_epochs * steps_per_epoch
    state = TrainState(epoch=0, history=[])

    resumed = load_checkpoint(checkpoint, fingerprint) if checkpoint is not None else None
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        torch.set_rng_state(resumed["torch_rng"])
        state = TrainState(epoch=int(resumed["epoch"]), history=list(resumed["history"]))
        log.info("Resuming from %s after epoch %d of %d", checkpoint, state.epoch, cfg.epochs)
    if on_epoch is not None:
        for row in state.history:
            on_epoch(row)

    for epoch in range(state.epoch, cfg.epochs):
        model.train()
        sampler.set_epoch(epoch)
        total_loss, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress, leave=False)
        for step, (images, targets) in enumerate(bar):
            augment = None
            if batch_augment is not None:
                augment = functools.partial(batch_augment, generator=batch_generator(cfg.seed, epoch, step))
            images = model_input(images, device, augment)
            targets = targets.to(device, non_blocking=True)
            if margin_steps > 0:
                model.head.margin_factor = min(1.0, (epoch * steps_per_epoch + step + 1) / margin_steps)
            ids = targets[:, 0] if use_species else targets
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                emb = model.embed(images)
                logits = model.head(emb, ids)
                species_logits = model.species_head(emb) if use_species else None
            loss = id_criterion(logits.float(), ids)
            if use_species:
                loss = loss + species_weight * criterion(species_logits.float(), targets[:, 1])
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}. Try a lower train.lr or "
                    f"arcface.margin, a smaller arcface.scale, or fp32 (runtime.device: cpu to rule out AMP)."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += loss.item() * len(ids)
            seen += len(ids)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")
        row = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "lr": optimizer.param_groups[0]["lr"]}
        last = epoch + 1 == cfg.epochs
        if evaluate is not None and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or last):
            row.update(evaluate(model))
        state.epoch = epoch + 1
        state.history.append(row)
        log.info(
            "epoch %d/%d %s", epoch + 1, cfg.epochs, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
        )
        if checkpoint is not None:
            save_checkpoint(checkpoint, fingerprint, model, optimizer, scheduler, scaler, state)
        if on_epoch is not None:
            on_epoch(row)
    if margin_steps > 0:
        model.head.margin_factor = 1.0
    return state.history
