"""Benchmark: training loop efficiency = images/s of our `train_model` (our loader on the default dataset's
images as the train stage reads them -- cropped and resized by the `resize` stage --, default augmentation,
fused AdamW, schedule, gradient clipping) / images/s of a bare loop doing the same model's forward + backward +
AdamW step on one pre-made batch tensor (both channels_last, as the train stage runs). Target >= 0.95 on 2 CPU
cores. Interleaved runs, best rates. A third loop, the bare one plus our batch augmentation of a uint8 batch, is
printed as context: ours against it is what the loop itself costs beyond the augmentation's work. The default
backend is params.yaml's (opencv: OpenCV on the uint8 batch); ``--backend torch`` measures the same augmentation
as float torch ops, ``--backend albumentations`` the per-image albumentations path.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch

from bench.common import default_dataset, ours_vs_bare, resized_default
from whaleid.config import ArcFaceConfig, AugmentConfig, ModelConfig, TrainConfig
from whaleid.core.device import resolve_workers
from whaleid.data.layout import load_dataset
from whaleid.model.augment import BatchAugment, batch_generator
from whaleid.model.network import WhaleNet
from whaleid.model.train import train_model

TARGET = 0.95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1920, help="training images (default: fold 0's size)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=-1, help="-1: auto, as runtime.num_workers")
    parser.add_argument("--backbone", default=ModelConfig().backbone)
    parser.add_argument(
        "--backend", default=AugmentConfig().backend, help="augment.backend: opencv | torch | albumentations"
    )
    parser.add_argument("--format", default="bmp", help="resize.format of the images read: bmp | png | jpg")
    args = parser.parse_args()
    ds = load_dataset(default_dataset())
    train = ds.train.iloc[: args.images]
    paths = resized_default("train_images", args.format)[: args.images]
    aug = AugmentConfig(backend=args.backend)
    labels = train["individual_id"].astype("category").cat.codes.to_numpy().astype(np.int64)
    n_classes = int(labels.max()) + 1
    mcfg = ModelConfig(backbone=args.backbone)
    cfg = TrainConfig(epochs=args.epochs)
    device = torch.device("cpu")
    steps = args.epochs * (len(paths) // cfg.batch_size)

    def ours() -> float:
        torch.manual_seed(0)
        net = WhaleNet(mcfg, ArcFaceConfig(), n_classes)
        start = time.perf_counter()
        train_model(
            net,
            paths,
            labels,
            cfg=cfg,
            aug=aug,
            img_size=mcfg.img_size,
            device=device,
            num_workers=args.num_workers,
            progress=False,
        )
        return steps * cfg.batch_size / (time.perf_counter() - start)

    def bare(augmented: bool = False) -> float:
        # augmented: the work the bare loop leaves out, our batch augmentation and input conversion of a uint8
        # batch of the same shape with the training loop's per-step generators, done each step (the context loop)
        torch.manual_seed(0)
        net = WhaleNet(mcfg, ArcFaceConfig(), n_classes).train().to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        x = torch.randn(cfg.batch_size, 3, mcfg.img_size, mcfg.img_size).contiguous(memory_format=torch.channels_last)
        images = torch.randint(0, 256, (cfg.batch_size, mcfg.img_size, mcfg.img_size, 3), dtype=torch.uint8)
        batch_augment = BatchAugment(aug)
        y = torch.from_numpy(labels[: cfg.batch_size])
        start = time.perf_counter()
        for step in range(steps):
            if augmented:
                generator = batch_generator(0, 0, step)
                x = batch_augment.augmented_input(images.clone(), device, generator)  # opencv works in place
            loss = torch.nn.functional.cross_entropy(net(x, y), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return steps * cfg.batch_size / (time.perf_counter() - start)

    bare_augmented = functools.partial(bare, augmented=True)
    references = {"bare + our augmentation": bare_augmented} if args.backend in ("torch", "opencv") else None
    ours_vs_bare(
        "train_loop_efficiency",
        ours,
        bare,
        TARGET,
        f"{args.backbone} @ {mcfg.img_size}px {args.format}, augment.backend {args.backend}, batch {cfg.batch_size}, "
        f"{steps} steps, {resolve_workers(args.num_workers, device, training=True)} workers, "
        f"{torch.get_num_threads()} torch threads",
        references=references,
    )


if __name__ == "__main__":
    main()
