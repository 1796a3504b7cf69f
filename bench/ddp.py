"""Benchmark: data-parallel training throughput, images/s of `train_model` under torchrun with N processes (gloo
on CPU, NCCL on GPUs) / images/s with 1 process, the same global batch, images and model (the default dataset's
resized images). Startup (process launch, group set-up) is not timed: each process times its own training, and
the run's rate is images / the slowest rank's time. On a 2-core CPU two processes share the same cores, so a
ratio <= 1 is expected there; it is reported, not judged.

    python -m bench.ddp [--nproc 2] [--images 1920] [--epochs 2] [--backbone test_resnet]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import default_dataset, note, report, resized_default
from whaleid.config import ArcFaceConfig, AugmentConfig, ModelConfig, TrainConfig


def worker(args: argparse.Namespace) -> None:
    """One rank (or the single process): train, time it, and (rank 0) write the rate to ``args.out``."""
    from whaleid.data.layout import load_dataset
    from whaleid.model import distributed
    from whaleid.model.network import WhaleNet
    from whaleid.model.train import train_model

    world, device = distributed.init("auto")
    ds = load_dataset(default_dataset())
    paths = resized_default("train_images")[: args.images]
    labels = ds.train["individual_id"].iloc[: args.images].astype("category").cat.codes.to_numpy().astype(np.int64)
    mcfg = ModelConfig(backbone=args.backbone)
    cfg = TrainConfig(epochs=args.epochs, eval_every=0, sync_bn=args.sync_bn)
    torch.manual_seed(0)
    net = WhaleNet(mcfg, ArcFaceConfig(), int(labels.max()) + 1)
    distributed.barrier()
    start = time.perf_counter()
    train_model(
        net,
        paths,
        labels,
        cfg=cfg,
        aug=AugmentConfig(),
        img_size=mcfg.img_size,
        device=device,
        num_workers=0,
        progress=False,
    )
    seconds = time.perf_counter() - start
    slowest = _max_over_ranks(seconds) if world.size > 1 else seconds
    if world.main:
        steps = args.epochs * (len(paths) // cfg.batch_size)
        Path(args.out).write_text(json.dumps({"rate": steps * cfg.batch_size / slowest, "ranks": world.size}))


def _max_over_ranks(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def _rate(nproc: int, args: argparse.Namespace, out: Path) -> float:
    cmd = [
        "-m",
        "bench.ddp",
        "--worker",
        "--out",
        str(out),
        "--images",
        str(args.images),
        "--epochs",
        str(args.epochs),
        "--backbone",
        args.backbone,
    ] + (["--sync-bn"] if args.sync_bn else [])
    if nproc > 1:
        cmd = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    subprocess.run([sys.executable, *cmd], check=True, env=env)
    return json.loads(out.read_text())["rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--images", type=int, default=1920)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backbone", default=ModelConfig().backbone)
    parser.add_argument("--sync-bn", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    resized_default("train_images")  # make the cache before timing
    rates: dict[int, list[float]] = {1: [], args.nproc: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved
            for n in rates:
                rates[n].append(_rate(n, args, Path(tmp) / f"rate{n}.json"))
    one, many = (float(np.median(rates[n])) for n in rates)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    note(
        f"{args.backbone}, {args.images} images, {args.epochs} epochs, global batch {TrainConfig().batch_size}, "
        f"{device}, {os.cpu_count()} cores, sync_bn {args.sync_bn}; images/s 1 process {one:.0f}, "
        f"{args.nproc} processes {many:.0f} (medians of {args.repeats})"
    )
    report(f"ddp_{args.nproc}_over_1_images_per_s", many / one, "report (<= 1 expected on a 2-core CPU)", True)


if __name__ == "__main__":
    main()
