"""Where and how tensors are computed: device choice, mixed precision and DataLoaders, for training and
inference alike.

* :func:`select_device`: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
* :func:`autocast_dtype`: bf16 on CUDA where supported, else fp16; none (fp32) on CPU.
* :func:`resolve_workers` / :func:`make_loader`: DataLoader workers (``runtime.num_workers``, -1 = auto) and
  pinned memory on CUDA; without workers, :class:`InlineBatches` reads each batch in one call.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

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


class InlineBatches:
    """The batches a DataLoader without worker processes yields from ``dataset``'s ``batch(items)`` and
    ``batch_sampler``, with the items of a batch read straight into one stacked tensor: the DataLoader's per-item
    fetch and collation cost a tenth of a small model's inference on 2 CPU cores (``python -m bench.embed``)."""

    def __init__(self, dataset: object, batch_sampler: Iterable[list], pin: bool) -> None:
        self.dataset, self.batch_sampler, self.pin = dataset, batch_sampler, pin

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for items in self.batch_sampler:
            images, labels = self.dataset.batch(items)
            yield (images.pin_memory(), labels.pin_memory()) if self.pin else (images, labels)

    def __len__(self) -> int:
        return len(self.batch_sampler)


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    num_workers: int,
    device: torch.device,
    persistent: bool = False,
    training: bool = False,
    sampler: Iterable | None = None,
    batch_sampler: Iterable[list] | None = None,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader | InlineBatches:
    """DataLoader with pinned memory on CUDA; ``persistent`` keeps worker processes alive across epochs;
    ``num_workers`` -1 picks a number for this machine (:func:`resolve_workers`). Without workers, a dataset
    with a ``batch`` method is read by :class:`InlineBatches` (the same batches, in the same order)."""
    num_workers = resolve_workers(num_workers, device, training)
    pin = device.type == "cuda"
    if num_workers == 0 and hasattr(dataset, "batch"):
        if batch_sampler is None:
            order = sampler if sampler is not None else range(len(dataset))
            batch_sampler = torch.utils.data.BatchSampler(order, batch_size, drop_last)
        return InlineBatches(dataset, batch_sampler, pin)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size if batch_sampler is None else 1,
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=num_workers > 0 and persistent,
        sampler=sampler,
        batch_sampler=batch_sampler,
        drop_last=drop_last,
    )
