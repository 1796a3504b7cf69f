"""ArcFace training loop with resumable, atomic per-epoch checkpoints.

* AdamW (backbone at ``lr``, neck/head/GeM at ``head_lr``), per-batch linear warm-up then cosine decay to
  ``min_lr_ratio * lr``.
* Augmentation (``augment.backend``): the loader only decodes, and :class:`whaleid.model.augment.BatchAugment`
  transforms each batch: opencv (the default) on the uint8 CPU batch, torch with the same parameters on the
  device; albumentations -- per image in the DataLoader.
* CUDA: autocast in bf16 (fp16 + GradScaler where bf16 is unsupported); CPU: fp32. channels_last on both
  (``python -m bench.train_loop``: 1.4x the images/s of NCHW for the default model on 2 CPU cores).
* Augmentation randomness depends only on (seed, epoch, step) (opencv, torch) or (seed, epoch, image) (albumentations,
  via :class:`EpochSampler`), so results do not depend on the number of workers and a resumed run equals an
  uninterrupted one on CPU.
* A checkpoint (model, optimiser, scheduler, scaler, RNG state, history) is written atomically after every
  epoch; its ``fingerprint`` must match, so a run with other params never resumes from a stale one.
* A non-finite loss stops training with :class:`TrainingDiverged` naming the epoch and step.
* Under torchrun (:mod:`whaleid.model.distributed`): DistributedDataParallel over the same global batches, augmentation
  and gradient as one process; rank 0 alone shows progress, evaluates, checkpoints and reports.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from whaleid.config import ArcFaceConfig, AugmentConfig, TrainConfig
from whaleid.core.device import autocast_dtype, make_loader, resolve_workers
from whaleid.core.errors import TrainingDiverged
from whaleid.core.log import bar_options
from whaleid.data.images import ImageDataset
from whaleid.model.augment import BatchAugment, batch_generator, model_input
from whaleid.model.checkpoint import TrainState, load_checkpoint, save_checkpoint
from whaleid.model.distributed import GlobalBatches, World, all_sum, barrier, current, synced_batch_norm, wrap
from whaleid.model.schedule import clip_gradients, freeze, frozen_modules, lr_lambda, param_groups
from whaleid.model.transforms import AsUint8, train_transform

log = logging.getLogger(__name__)
KEEP_BYTES = 1 << 30  # decoded training images kept in memory across epochs up to this size (no workers only)


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


class _Step(nn.Module):
    """The training forward pass as one module: identity (and species) logits of a batch. DistributedDataParallel
    synchronises the gradients of what its wrapped module's forward computes."""

    def __init__(self, model: nn.Module, use_species: bool) -> None:
        super().__init__()
        self.model, self.use_species = model, use_species

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = self.model.embed(images)
        return self.model.head(emb, ids), self.model.species_head(emb) if self.use_species else None


@dataclass
class _Run:
    """Everything one training run steps with (built by :func:`_setup`)."""

    step: nn.Module  # _Step, in DistributedDataParallel under torchrun
    world: World
    loader: torch.utils.data.DataLoader
    sampler: EpochSampler | GlobalBatches
    batch_augment: BatchAugment | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None
    use_species: bool
    steps_per_epoch: int
    frozen: list[nn.Module]
    params: list[nn.Parameter]  # those that get gradients, listed once (walking the modules every step costs)


def _setup(
    model: nn.Module,
    paths: Sequence[str | Path],
    labels: Sequence[int] | np.ndarray,
    *,
    species: Sequence[int] | np.ndarray | None,
    cfg: TrainConfig,
    aug: AugmentConfig,
    arc: ArcFaceConfig,
    img_size: int,
    device: torch.device,
    num_workers: int,
    sync_bn: bool = False,
) -> _Run:
    """Seed, move the model, and build the loader, optimiser, LR schedule and scaler."""
    torch.manual_seed(cfg.seed)
    model.to(device, memory_format=torch.channels_last)  # channels_last: faster on CUDA and on CPUs alike
    use_species = species is not None and arc.species_weight > 0 and getattr(model, "species_head", None) is not None
    targets_all = np.stack([np.asarray(labels), np.asarray(species)], axis=1) if use_species else labels
    on_device = aug.backend in ("torch", "opencv")  # the loader only decodes: augmented a batch at a time
    transform = AsUint8(img_size) if on_device else train_transform(img_size, aug, cfg.seed)
    # Without worker processes, the decoded images (not augmented yet) are kept for the epochs after the first
    # when they fit KEEP_BYTES (the default's 2,400 photos at 96 px: 66 MB): decoding is then paid once a run.
    keep = (on_device and resolve_workers(num_workers, device, training=True) == 0
            and len(paths) * img_size * img_size * 3 <= KEEP_BYTES)  # fmt: skip
    dataset = ImageDataset(paths, transform, targets_all, keep=keep)
    batch_augment = BatchAugment(aug) if on_device else None
    world = current()
    if world.size == 1:
        sampler = EpochSampler(len(dataset), cfg.seed)
        loader = make_loader(
            dataset,
            cfg.batch_size,
            num_workers=num_workers,
            device=device,
            sampler=sampler,
            drop_last=len(dataset) > cfg.batch_size,
            persistent=True,
            training=True,
        )
    else:
        sampler = GlobalBatches(len(dataset), cfg.batch_size, cfg.seed, world)
        loader = make_loader(
            dataset, 1, num_workers=num_workers, device=device, batch_sampler=sampler, persistent=True, training=True
        )
    has_species = getattr(model, "species_head", None) is not None
    frozen = frozen_modules(model, cfg.freeze)
    freeze(frozen)  # before DDP wraps the model: it syncs only the parameters that get gradients
    step = wrap(_Step(model, use_species), device, sync_bn, unused=has_species and not use_species)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    # fused: one kernel for every parameter's update (4x torch's default per-tensor loop on 2 CPU cores)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, total, warmup, cfg.min_lr_ratio))
    dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    params = [p for p in model.parameters() if p.requires_grad]
    return _Run(step, world, loader, sampler, batch_augment, optimizer, scheduler, scaler, dtype, use_species,
                steps_per_epoch, frozen, params)  # fmt: skip


def _restore(run: _Run, model: nn.Module, checkpoint: Path | None, fingerprint: str, epochs: int) -> TrainState:
    """The state to start from: a matching checkpoint's, loaded into the model and optimiser, or a fresh one."""
    resumed = load_checkpoint(checkpoint, fingerprint) if checkpoint is not None else None
    if resumed is None:
        return TrainState(epoch=0, history=[])
    model.load_state_dict(resumed["model"])
    run.optimizer.load_state_dict(resumed["optimizer"])
    run.scheduler.load_state_dict(resumed["scheduler"])
    run.scaler.load_state_dict(resumed["scaler"])
    torch.set_rng_state(resumed["torch_rng"])
    log.info("Resuming from %s after epoch %d of %d", checkpoint, int(resumed["epoch"]), epochs)
    return TrainState(epoch=int(resumed["epoch"]), history=list(resumed["history"]))


def _train_epoch(
    run: _Run,
    model: nn.Module,
    epoch: int,
    *,
    cfg: TrainConfig,
    arc: ArcFaceConfig,
    device: torch.device,
    progress: bool,
) -> float:
    """One pass over the loader; returns the mean loss."""
    model.train()
    freeze(run.frozen)
    run.sampler.set_epoch(epoch)
    criterion = nn.CrossEntropyLoss()
    id_criterion = nn.CrossEntropyLoss(label_smoothing=arc.label_smoothing)
    margin_steps = arc.margin_warmup_epochs * run.steps_per_epoch
    total_loss, seen = 0.0, 0
    opts = {"leave": False, **bar_options(per_batch=True)}
    opts["disable"] = opts.get("disable", False) or not progress or not run.world.main
    rows = run.sampler.rows if isinstance(run.sampler, GlobalBatches) else None
    total = getattr(run.sampler, "last", None)
    bar = tqdm(run.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", **opts)
    for step, (images, targets) in enumerate(bar):
        if run.batch_augment is None:  # albumentations: augmented and normalised in the loader
            images = model_input(images, device)
        else:
            generator = batch_generator(cfg.seed, epoch, step)
            images = run.batch_augment.augmented_input(images, device, generator, rows, total)
        targets = targets.to(device, non_blocking=True)
        if margin_steps > 0:
            model.head.margin_factor = min(1.0, (epoch * run.steps_per_epoch + step + 1) / margin_steps)
        ids = targets[:, 0] if run.use_species else targets
        with torch.autocast(device.type, dtype=run.dtype, enabled=run.dtype is not None):
            logits, species_logits = run.step(images, ids)
        loss = id_criterion(logits.float(), ids)
        if run.use_species:
            loss = loss + arc.species_weight * criterion(species_logits.float(), targets[:, 1])
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}. Try a lower train.lr or "
                f"arcface.margin, a smaller arcface.scale, or fp32 (runtime.device: cpu to rule out AMP)."
            )
        run.optimizer.zero_grad(set_to_none=True)
        # Under DDP the gradient is the ranks' mean: weighting by the share of the global batch makes it the
        # global batch's mean loss's gradient (the weight is 1 when the shares are equal).
        share = len(ids) * run.world.size / (run.sampler.last if rows is not None else len(ids))
        run.scaler.scale(loss * share if share != 1 else loss).backward()
        if cfg.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)
            clip_gradients(run.params, cfg.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        total_loss += loss.item() * len(ids)
        seen += len(ids)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}")
    total_loss, seen = all_sum([total_loss, seen])
    return total_loss / max(seen, 1)


def train_model(
    model: nn.Module,
    paths: Sequence[str | Path],
    labels: Sequence[int] | np.ndarray,
    *,
    cfg: TrainConfig,
    aug: AugmentConfig,
    img_size: int,
    device: torch.device,
    arc: ArcFaceConfig | None = None,
    species: Sequence[int] | np.ndarray | None = None,
    num_workers: int = 0,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place on images ``paths`` with class ``labels``; return the per-epoch history (loss, lr
    and whatever ``evaluate`` returns).

    ``evaluate`` is called every ``cfg.eval_every`` epochs and on the last; ``on_epoch`` gets each history row,
    including rows replayed from a checkpoint when resuming. From ``arc``: with ``species`` and
    ``species_weight > 0`` the loss adds ``species_weight`` times the species head's cross-entropy;
    ``margin_warmup_epochs`` ramps the head's margins linearly from 0 to their full value, per batch;
    ``label_smoothing`` goes to the identity cross-entropy. With ``checkpoint``, a checkpoint is written after
    every epoch and a matching one (same ``fingerprint``) is resumed from. Under torchrun, ``evaluate``,
    ``on_epoch`` and checkpoints happen on rank 0 only (history rows of other ranks have no validation keys).
    """
    arc = arc or ArcFaceConfig()
    run = _setup(
        model,
        paths,
        labels,
        species=species,
        cfg=cfg,
        aug=aug,
        arc=arc,
        img_size=img_size,
        device=device,
        num_workers=num_workers,
        sync_bn=cfg.sync_bn,
    )
    state = _restore(run, model, checkpoint, fingerprint, cfg.epochs)
    main = run.world.main
    if on_epoch is not None and main:
        for row in state.history:
            on_epoch(row)
    cpu_sync = run.world.size > 1 and cfg.sync_bn and device.type != "cuda"
    for epoch in range(state.epoch, cfg.epochs):
        with synced_batch_norm() if cpu_sync else contextlib.nullcontext():
            loss = _train_epoch(run, model, epoch, cfg=cfg, arc=arc, device=device, progress=progress)
        row = {"epoch": epoch + 1, "loss": loss, "lr": run.optimizer.param_groups[0]["lr"]}
        last = epoch + 1 == cfg.epochs
        if evaluate is not None and main and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or last):
            row.update(evaluate(model))
        state.epoch = epoch + 1
        state.history.append(row)
        log.info(
            "epoch %d/%d %s", epoch + 1, cfg.epochs, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
        )
        if checkpoint is not None and main:
            save_checkpoint(
                checkpoint,
                fingerprint,
                model,
                optimizer=run.optimizer,
                scheduler=run.scheduler,
                scaler=run.scaler,
                state=state,
            )
        if on_epoch is not None and main:
            on_epoch(row)
        barrier()  # the other ranks wait while rank 0 evaluates and checkpoints
    if arc.margin_warmup_epochs > 0:
        model.head.margin_factor = 1.0
    return state.history
