"""Benchmark: what :func:`whaleid.core.memory.tune_malloc` (called first by every stage and the ``whaleid``
command) buys. One epoch of our ``train_model`` and one ``extract_embeddings`` pass over the default dataset's
resized images, each in a fresh process with glibc's malloc as it comes (``WHALEID_MALLOC=default``) and as whaleid
sets it, interleaved; prints the median images/s of each, their ratio and the processes' minor page faults.
mallopt cannot be undone inside a process, hence one process per run. Target: tuned >= 1.05x default for both.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from bench.common import ROOT, note, report, resized_default
from whaleid.core.memory import ENV

TARGET = 1.05


def child(work: str, images: int) -> None:
    """One measured run in this process: print {"rate": images/s, "faults": minor page faults} as JSON."""
    import numpy as np
    import torch

    from whaleid.config import ArcFaceConfig, AugmentConfig, ModelConfig, TrainConfig
    from whaleid.core.memory import tune_malloc

    tune_malloc()  # a no-op under WHALEID_MALLOC=default
    mcfg = ModelConfig()
    device = torch.device("cpu")
    torch.manual_seed(0)
    if work == "train":
        from bench.common import default_dataset
        from whaleid.data.layout import load_dataset
        from whaleid.model.network import WhaleNet
        from whaleid.model.train import train_model

        paths = resized_default("train_images")[:images]
        ids = load_dataset(default_dataset()).train["individual_id"].iloc[:images]
        labels = ids.astype("category").cat.codes.to_numpy().astype(np.int64)
        net = WhaleNet(mcfg, ArcFaceConfig(), int(labels.max()) + 1)
        cfg = TrainConfig(epochs=1)

        def run() -> None:
            train_model(net, paths, labels, cfg=cfg, aug=AugmentConfig(), img_size=mcfg.img_size, device=device,
                        progress=False)  # fmt: skip

        n = len(paths) // cfg.batch_size * cfg.batch_size
    else:
        from whaleid.config import EmbedConfig
        from whaleid.model.embed import extract_embeddings
        from whaleid.model.network import WhaleNet

        paths = (resized_default("train_images") + resized_default("test_images"))[:images]
        net = WhaleNet(mcfg, ArcFaceConfig(), 10).eval().to(memory_format=torch.channels_last)

        def run() -> None:
            extract_embeddings(net, paths, mcfg.img_size, batch_size=EmbedConfig().batch_size, device=device,
                               progress=False)  # fmt: skip

        n = len(paths)
    run()  # warm-up: first-touch costs that both settings pay once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    run()
    rate = n / (time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"rate": rate, "faults": faults}))


def measure(work: str, images: int, tuned: bool) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if not tuned:
        env[ENV] = "default"
    cmd = [sys.executable, "-m", "bench.allocator", "--child", work, "--images", str(images)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["train", "embed"], help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=0, help="images per run (default: 1920 train, 3200 embed)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.images)
        return
    for work, images in (("train", args.images or 1920), ("embed", args.images or 3200)):
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for tuned in (False, True):
                runs[tuned].append(measure(work, images, tuned))
        rate = {k: statistics.median(r["rate"] for r in v) for k, v in runs.items()}
        faults = {k: statistics.median(r["faults"] for r in v) for k, v in runs.items()}
        note(
            f"{work}, {images} images, {args.repeats} processes each: glibc default {rate[False]:.0f} img/s "
            f"({faults[False]:.0f} minor page faults), tuned {rate[True]:.0f} img/s ({faults[True]:.0f})"
        )
        ratio = rate[True] / rate[False]
        report(f"malloc_tuned_{work}_speedup", ratio, f">= {TARGET}", ratio >= TARGET, "{:.2f}x")


if __name__ == "__main__":
    main()
