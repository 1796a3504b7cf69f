"""Benchmark: competition-scale dry run. On a generated competition-size dataset (51,033 train / 27,956 test at
64 px) it runs the real stages `embed -> ensemble -> knn -> local -> pseudo -> threshold -> submit` (as
`python -m stages.X`, like `dvc repro`) with the default tiny timm model at the photos' 64 px (randomly
initialised: no training; ``--img-size 96`` for the default input size),
``local.method: none`` (bench/local.py measures local features at this scale) and no pseudo-label rounds, and
reports wall time and peak memory (the stage process and its DataLoader workers together, sampled every 0.1 s).
Targets: under 60 s, under 8 GiB. The prerequisite stages (encode, split, detect, resize) are timed and reported
separately (resize writes one file per photo: 79k files into two folders).

Usage: python -m bench.dry_run [--data DIR]   (default: generated once into .whaleid_cache/bench/competition)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
import yaml

from bench.common import ROOT, note, report
from whaleid.core.runtime import Runtime

TARGET_S, TARGET_GIB = 60.0, 8.0


def run_stage(stage: str, cwd: Path, *args: str) -> tuple[float, float]:
    """Run one stage; return (seconds, peak resident GiB of its process tree)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage}", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = root.memory_info().rss + sum(c.memory_info().rss for c in root.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed ({proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - start, peak / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".whaleid_cache/bench/competition")
    parser.add_argument("--img-size", type=int, default=64, help="model.img_size (the photos are 64 px)")
    args = parser.parse_args()
    from whaleid.config import ArcFaceConfig, ModelConfig, SampleConfig
    from whaleid.core.atomic import save_torch
    from whaleid.data.sample import write_dataset
    from whaleid.model.network import WhaleNet, model_payload

    data = args.data.resolve()
    if not (data / "train.csv").is_file():
        start = time.perf_counter()
        write_dataset(
            SampleConfig(n_train=51033, n_test=27956, img_size=64), data, run=Runtime(n_jobs=-1, progress=False)
        )
        note(f"generated {data} in {time.perf_counter() - start:.0f} s")
    work = Path(tempfile.mkdtemp(prefix="whaleid-dryrun-"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["dir"] = str(data)
    params["crop"]["boxes"] = str(data / "boxes.csv")
    params["detect"]["use"] = "never"  # the train photos' boxes as they are; no detector training in a dry run
    params["local"]["method"] = "none"  # passes the kNN results through; bench/local.py prices local features
    params["pseudo"]["rounds"] = 0
    # The model at the photos' own 64 px, as the target was set (the default model.img_size, 96 px since it was
    # chosen on real photos, would upscale every 64-px photo and costs 2.25x the embedding: --img-size 96).
    params["model"]["img_size"] = args.img_size
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prep = {s: run_stage(s, work) for s in ("encode", "split", "detect", "resize")}
    note("prerequisites: " + ", ".join(f"{s} {t:.0f} s / {m:.2f} GiB" for s, (t, m) in prep.items()))

    n_classes = len(json.loads((work / "data/prepared/labels.json").read_text())["individual_id"])
    torch.manual_seed(0)
    mcfg = ModelConfig(**{k: v for k, v in params["model"].items()})
    acfg = ArcFaceConfig(**params["arcface"])
    net = WhaleNet(mcfg, acfg, n_classes)
    save_torch(
        work / f"models/fold{params['fold']}/model.pt",
        model_payload(net, mcfg, acfg, n_classes=n_classes, extra={"fold": params["fold"]}),
    )

    model = {"embed": [f"fold{params['fold']}"]}  # the fold model alone
    stages = {
        s: run_stage(s, work, *model.get(s, []))
        for s in ("embed", "ensemble", "knn", "local", "pseudo", "threshold", "submit")
    }
    total = sum(t for t, _ in stages.values())
    peak = max(m for _, m in stages.values())
    rows = len((work / "submissions/submission.csv").read_text().splitlines()) - 1
    shutil.rmtree(work, ignore_errors=True)
    note(
        f"{mcfg.backbone} @ {mcfg.img_size}px, {os.cpu_count()} cores: "
        + ", ".join(f"{s} {t:.0f} s / {m:.2f} GiB" for s, (t, m) in stages.items())
        + f"; submission rows {rows}"
    )
    report("dry_run_seconds", total, f"< {TARGET_S:.0f}", total < TARGET_S, "{:.0f}")
    report("dry_run_peak_gib", peak, f"< {TARGET_GIB:.0f}", peak < TARGET_GIB, "{:.2f}")


if __name__ == "__main__":
    main()
