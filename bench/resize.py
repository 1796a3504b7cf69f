"""Benchmark: large photos. The competition's JPEGs are 1-4 megapixels; this writes JPEGs at 2000x1300 (the
default dataset's images, upscaled, with grain so they compress like photos), then measures the training
DataLoader's images/s reading the full-size files against reading the `resize` stage's output (resized once).
Target >= 5x. Also reports the one-off cost of the resize itself.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import default_dataset, interleaved, note, report, timed
from whaleid.core.device import make_loader
from whaleid.core.runtime import Runtime
from whaleid.data.images import ImageDataset, read_image
from whaleid.data.layout import load_dataset
from whaleid.data.resize import resize_split, resized_name
from whaleid.model.train import EpochSampler
from whaleid.model.transforms import AsUint8

TARGET = 5.0
WIDTH, HEIGHT = 2000, 1300


def write_large(sources: list[Path], out: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for src in sources:
        img = cv2.resize(read_image(src), (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        img += rng.integers(-12, 13, size=img.shape, dtype=np.int16)
        bgr = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        path = out / src.name
        cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def loader_rate(paths: list[Path], img_size: int, num_workers: int) -> float:
    """Images/s of the default training loader (decode, and resize unless already ``img_size``)."""
    ds = ImageDataset(paths, AsUint8(img_size), np.zeros(len(paths), dtype=np.int64))
    sampler = EpochSampler(len(ds), 0)
    loader = make_loader(ds, 32, num_workers=num_workers, device=torch.device("cpu"), sampler=sampler)
    start = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=-1, help="-1: auto, as runtime.num_workers")
    args = parser.parse_args()
    ds = load_dataset(default_dataset())
    tmp = Path(tempfile.mkdtemp(prefix="whaleid-bench-resize-"))
    try:
        (tmp / "full").mkdir()
        full = write_large(ds.train_paths()[: args.images], tmp / "full")
        mb = sum(p.stat().st_size for p in full) / len(full) / 1e6
        (tmp / "small").mkdir()
        seconds, _ = timed(
            lambda: resize_split(full, tmp / "small", tmp / "cache", size=args.img_size, run=Runtime(progress=False))
        )
        small = [tmp / "small" / resized_name(p.name) for p in full]
        rates = interleaved(
            {
                "full": lambda: loader_rate(full, args.img_size, args.num_workers),
                "resized": lambda: loader_rate(small, args.img_size, args.num_workers),
            }
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    note(
        f"{len(full)} JPEGs {WIDTH}x{HEIGHT} ({mb:.2f} MB each) -> {args.img_size}px BMPs; one-off resize "
        f"{seconds:.1f} s ({len(full) / seconds:.0f} img/s); loader: full-size {rates['full']:.0f} img/s, "
        f"resized {rates['resized']:.0f} img/s"
    )
    ratio = rates["resized"] / rates["full"]
    report("resize_loader_speedup", ratio, f">= {TARGET:.0f}x", ratio >= TARGET, "{:.1f}x")


if __name__ == "__main__":
    main()
