"""Benchmark: embedding extraction efficiency = images/s of our `extract_embeddings` (our loader -- with no
workers, `InlineBatches` -- over the default dataset's images as the embed stage reads them, cropped and resized
by the `resize` stage; normalisation on the device, L2 normalisation) / images/s of bare inference of the same
model on pre-made tensors of the same batch size (both channels_last, as the embed stage runs). Target >= 0.95.
Interleaved runs, best rates. A third loop, the bare one plus reading and decoding the same photos a batch at a
time, is printed as context: what reading costs against the model; and a fourth, the bare one on the network ours runs
(:mod:`whaleid.model.fold`: BatchNorms folded into the convolutions): ours against it is what our loop costs.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from bench.common import ours_vs_bare, resized_default
from whaleid.config import ArcFaceConfig, EmbedConfig, ModelConfig
from whaleid.core.device import resolve_workers
from whaleid.data.images import ImageDataset
from whaleid.model.embed import extract_embeddings
from whaleid.model.fold import inference_model
from whaleid.model.network import WhaleNet
from whaleid.model.transforms import AsUint8

TARGET = 0.95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3200)
    parser.add_argument("--num-workers", type=int, default=-1, help="-1: auto, as runtime.num_workers")
    parser.add_argument("--backbone", default=ModelConfig().backbone)
    parser.add_argument("--format", default="bmp", help="resize.format of the images read: bmp | png | jpg")
    args = parser.parse_args()
    paths = (resized_default("train_images", args.format) + resized_default("test_images", args.format))[: args.images]
    size = ModelConfig().img_size
    torch.manual_seed(0)
    net = (
        WhaleNet(ModelConfig(backbone=args.backbone), ArcFaceConfig(), 10).eval().to(memory_format=torch.channels_last)
    )
    batch = EmbedConfig().batch_size
    device = torch.device("cpu")

    def ours() -> float:
        start = time.perf_counter()
        extract_embeddings(
            net, paths, size, batch_size=batch, device=device, num_workers=args.num_workers, progress=False
        )
        return len(paths) / (time.perf_counter() - start)

    def bare(reading: bool = False, folded: bool = False) -> float:
        # the same batches as ours, the last one partial; reading: each batch's photos also read and decoded
        # (ImageDataset.batch, as ours reads them); folded: the network with its BatchNorms folded, as ours runs
        # it (the context loops)
        model = inference_model(net) if folded else net
        dataset = ImageDataset(paths, AsUint8(size))
        xs = [
            torch.randn(min(batch, len(paths) - i), 3, size, size).contiguous(memory_format=torch.channels_last)
            for i in range(0, len(paths), batch)
        ]
        start = time.perf_counter()
        with torch.no_grad():
            for k, x in enumerate(xs):
                if reading:
                    dataset.batch(range(k * batch, k * batch + len(x)))
                model.embed(x)
        return len(paths) / (time.perf_counter() - start)

    ours_vs_bare(
        "embed_efficiency",
        ours,
        bare,
        TARGET,
        f"{args.backbone} @ {size}px {args.format}, {len(paths)} images, batch {batch}, {resolve_workers(args.num_workers, device)} workers",
        references={
            "bare + reading the photos": functools.partial(bare, reading=True),
            "bare, BatchNorm folded": functools.partial(bare, folded=True),
        },
    )


if __name__ == "__main__":
    main()
