"""Data-parallel training with PyTorch's ``torchrun`` (DistributedDataParallel): NCCL on GPUs, gloo on CPU.

How a stage gets there: with ``runtime.nproc`` > 1 the train stage (``python -m stages.train NAME``, one command
in dvc.yaml) starts itself again under ``python -m torch.distributed.run --nproc_per_node=N`` and waits for it
(:func:`launch`); the extra launcher arguments for several nodes come from ``$WHALEID_TORCHRUN_ARGS`` (default
``--standalone``). Started by torchrun directly, the stage sees ``LOCAL_RANK``/``WORLD_SIZE`` and joins the group.

What stays the same whatever the number of processes N (:class:`GlobalBatches`):

* the global batch: ``train.batch_size`` images per optimiser step, in the order a single process takes them; each
  rank takes a contiguous share of every global batch (``batch_size`` must divide by N);
* the augmentation of each image: a batch's random parameters are drawn for the whole global batch and each rank
  applies its rows (:class:`whaleid.model.augment.BatchAugment` ``rows``);
* the gradient: each rank's loss is weighted by its share of the global batch, so DDP's mean over ranks is the
  gradient of the global batch's mean loss;
* with ``train.sync_bn``, BatchNorm statistics over the global batch: torch's SyncBatchNorm on CUDA (timm's
  converter keeps BatchNormAct layers whole), :func:`synced_batch_norm` on CPU (SyncBatchNorm is GPU-only).

Rank 0 alone logs, writes dvclive curves, checkpoints and ``model.pt``; every rank resumes from the same
checkpoint. The ArcFace class-centre matrix is an ordinary replicated parameter (DDP all-reduces its gradient):
below millions of classes that is cheap. Partial-FC (each rank holding a slice of the centres and sampling
negatives) would replace the head's logits in :mod:`whaleid.model.heads` and the all-reduce of its gradient.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from whaleid.core.device import select_device
from whaleid.core.errors import ConfigError

log = logging.getLogger(__name__)

LAUNCHER_ENV = "WHALEID_TORCHRUN_ARGS"


@dataclass(frozen=True)
class World:
    """This process's place in the process group (rank 0 of 1 without one)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def current() -> World:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return World(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return World()


def launcher_command(nproc: int, module: str, args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run ... -m module args``: the torchrun command :func:`launch` runs."""
    extra = shlex.split(os.environ.get(LAUNCHER_ENV, "--standalone"))
    return [sys.executable, "-m", "torch.distributed.run", *extra, f"--nproc_per_node={nproc}", "-m", module, *args]


def launch(nproc: int, module: str, args: Sequence[str]) -> int:
    """Run ``module`` under torchrun with ``nproc`` processes on this node and return its exit status. A SIGINT or
    SIGTERM here is passed on to torchrun, which stops the workers (they keep their last checkpoint)."""
    cmd = launcher_command(nproc, module, args)
    log.info("starting %d processes: %s", nproc, shlex.join(cmd))
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        raise


def init(device_name: str) -> tuple[World, torch.device]:
    """Join torchrun's process group when started by it (NCCL on CUDA, gloo on CPU), quieting ranks > 0; return
    this process's world and device (``cuda:LOCAL_RANK`` on GPUs)."""
    device = select_device(device_name)
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return World(), device
    if device.type == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started local rank {local} but this node has {torch.cuda.device_count()} "
                "GPU(s): lower runtime.nproc (or --nproc_per_node) to at most that."
            )
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    world = current()
    if not world.main:
        logging.getLogger().setLevel(logging.WARNING)
    return world, device


def barrier() -> None:
    if current().size > 1:
        torch.distributed.barrier()


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over the ranks (float64 on CPU; gloo and NCCL both take it via the default group)."""
    world = current()
    if world.size == 1:
        return [float(v) for v in values]
    backend = torch.distributed.get_backend()
    t = torch.tensor(list(values), dtype=torch.float64, device="cuda" if backend == "nccl" else "cpu")
    torch.distributed.all_reduce(t)
    return t.cpu().tolist()


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every rank's ``rows`` (n_r, d) stacked in rank order, on every rank."""
    parts: list = [None] * current().size
    torch.distributed.all_gather_object(parts, rows)
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else rows


def relaunched(nproc: int, module: str, args: Sequence[str]) -> bool:
    """For a stage's ``main``: with ``nproc`` > 1 outside torchrun, run the stage under torchrun, exit with its
    status if it failed, and return True (the caller is done); otherwise False (go on, in this process)."""
    if nproc <= 1 or under_torchrun():
        return False
    status = launch(nproc, module, args)
    if status:
        sys.exit(status)
    return True


class GlobalBatches(torch.utils.data.Sampler):
    """Batches of ``(index, seed)`` pairs for one rank: the global batches a single process would take (a shuffle
    that is a pure function of (seed, epoch), ``batch_size`` images each, the incomplete last one dropped unless it
    is the only one), each split into ``world.size`` contiguous shares; this rank takes share ``world.rank``.
    :attr:`rows` are the rank's rows within each global batch (for the augmentation draw)."""

    def __init__(self, n: int, batch_size: int, seed: int, world: World) -> None:
        if batch_size % world.size:
            raise ConfigError(
                f"train.batch_size {batch_size} does not divide into {world.size} processes: the "
                "global batch must split evenly; choose a multiple of runtime.nproc."
            )
        self.n, self.batch_size, self.seed, self.world, self.epoch = n, batch_size, seed, world, 0
        self.n_batches = n // batch_size if n > batch_size else 1
        self.last = min(n, batch_size)  # size of every global batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def rows(self) -> slice:
        bounds = np.linspace(0, self.last, self.world.size + 1).round().astype(int)
        return slice(int(bounds[self.world.rank]), int(bounds[self.world.rank + 1]))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n).tolist()
        seeds = rng.integers(0, 2**31 - 1, size=self.n).tolist()
        part = self.rows
        for step in range(self.n_batches):
            start = step * self.batch_size
            yield list(zip(order[start:][part], seeds[start:][part], strict=True))

    def __len__(self) -> int:
        return self.n_batches


class _AllSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of each rank's input is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        torch.distributed.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


def _synced_batch_norm(
    input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
):
    """``F.batch_norm`` with the batch statistics taken over every rank's batch (differentiable all-reduce)."""
    if not training:
        return _BATCH_NORM(input, running_mean, running_var, weight, bias, training, momentum, eps)
    c = input.shape[1]
    dims = [0, *range(2, input.dim())]
    x = input.float()
    count = torch.full((1,), x.numel() / c, dtype=torch.float32, device=x.device)
    stats = _AllSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
    n = stats[-1]
    mean = stats[:c] / n
    var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
    if running_mean is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean.detach().to(running_mean.dtype))
            unbiased = var.detach() * n / max(float(n) - 1.0, 1.0)
            running_var.mul_(1 - momentum).add_(momentum * unbiased.to(running_var.dtype))
    shape = [1, c] + [1] * (input.dim() - 2)
    y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + eps)
    if weight is not None:
        y = y * weight.view(shape) + bias.view(shape)
    return y.to(input.dtype)


_BATCH_NORM = torch.nn.functional.batch_norm


@contextlib.contextmanager
def synced_batch_norm() -> Iterator[None]:
    """Within the block, every BatchNorm in training mode (torch's and timm's BatchNormAct alike, which all call
    ``F.batch_norm``) normalises with the global batch's statistics across the gloo ranks: SyncBatchNorm for CPU."""
    torch.nn.functional.batch_norm = _synced_batch_norm
    try:
        yield
    finally:
        torch.nn.functional.batch_norm = _BATCH_NORM


def wrap(model: torch.nn.Module, device: torch.device, sync_bn: bool, unused: bool = False) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there is a process group, even of one (else as it is); with ``sync_bn`` on
    CUDA its BatchNorms become SyncBatchNorm first (on CPU see :func:`synced_batch_norm`). ``unused``: some
    parameters get no gradient (DDP must then look for them)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return model
    if sync_bn and device.type == "cuda":
        from timm.layers import convert_sync_batchnorm

        model = convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
