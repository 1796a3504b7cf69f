"""Where and how tensors are computed: device choice, mixed precision and DataLoaders, for training and
inference alike.

* :func:`select_device`: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
* :func:`autocast_dtype`: bf16 on CUDA where supported, else fp16; none (fp32) on CPU.
* :func:`resolve_workers` / :func:`make_loader`: DataLoader workers (``runtime.num_workers``, -1 = auto) and
  pinned memory on CUDA.
"""

from __future__ import annotations

import os

import torch

from whaleid.core.errors import ConfigError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device is {name!r} but no CUDA device is available; use auto or cpu.")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for ``device``: bf16 where supported, else fp16, none on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_workers(num_workers: int, device: torch.device, training: bool = False) -> int:
    """``num_workers`` as given, or for -1 (auto): on a CPU with 2 cores or fewer, 0 -- worker processes would
    fight the model's own threads for the cores (``python -m bench.train_loop``: efficiency 0.73 with 2 workers,
    0.87 with none); otherwise one per core (inference) or one per core but one (training), at most 8."""
    if num_workers >= 0:
        return num_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cpu" and cores <= 2:
        return 0
    return max(0, min(8, cores - 1 if training else cores))


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    num_workers: int,
    device: torch.device,
    persistent: bool = False,
    training: bool = False,
    **kwargs: object,
) -> torch.utils.data.DataLoader:
    """DataLoader with pinned memory on CUDA; ``persistent`` keeps worker processes alive across epochs;
    ``num_workers`` -1 picks a number for this machine (:func:`resolve_workers`)."""
    num_workers = resolve_workers(num_workers, device, training)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0 and persistent,
        **kwargs,
    )
