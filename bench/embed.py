"""Benchmark: embedding extraction efficiency = images/s of our `extract_embeddings` (DataLoader over the
default dataset's images, eval transform, normalisation) / images/s of bare inference of the same model on
pre-made tensors of the same batch size. Target >= 0.9. Interleaved runs, medians.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import default_dataset, ours_vs_bare
from whaleid.config import ArcFaceConfig, EmbedConfig, ModelConfig
from whaleid.data import load_dataset
from whaleid.embed import extract_embeddings, resolve_workers
from whaleid.model import WhaleNet

TARGET = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3200)
    parser.add_argument("--num-workers", type=int, default=-1, help="-1: auto, as runtime.num_workers")
    parser.add_argument("--backbone", default=ModelConfig.backbone)
    parser.add_argument("--img-size", type=int, default=ModelConfig.img_size)
    args = parser.parse_args()
    ds = load_dataset(default_dataset())
    paths = (ds.train_paths() + ds.test_paths())[: args.images]
    torch.manual_seed(0)
    net = WhaleNet(ModelConfig(backbone=args.backbone, img_size=args.img_size), ArcFaceConfig(), 10).eval()
    batch = EmbedConfig.batch_size
    device = torch.device("cpu")

    def ours() -> float:
        start = time.perf_counter()
        extract_embeddings(net, paths, args.img_size, batch, device, args.num_workers, progress=False)
        return len(paths) / (time.perf_counter() - start)

    def bare() -> float:
        x = torch.randn(batch, 3, args.img_size, args.img_size)
        n_batches = -(-len(paths) // batch)
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(n_batches):
                net.embed(x)
        return n_batches * batch / (time.perf_counter() - start)

    ours_vs_bare(
        "embed_efficiency",
        ours,
        bare,
        TARGET,
        f"{args.backbone} @ {args.img_size}px, {len(paths)} images, batch {batch}, {resolve_workers(args.num_workers, device)} workers",
    )


if __name__ == "__main__":
    main()
