"""Shared benchmark helpers: the result line format, interleaved timing and the default dataset."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from whaleid.core.memory import tune_malloc
from whaleid.core.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]

tune_malloc()  # benchmarks run as the stages do (bench/allocator.py measures what it changes)


def report(name: str, value: float, target: str, ok: bool, fmt: str = "{:.3f}") -> None:
    """One result line: ``name: value (target: T) PASS|FAIL``."""
    print(f"{name}: {fmt.format(value)} (target: {target}) {'PASS' if ok else 'FAIL'}", flush=True)


def note(text: str) -> None:
    """A context line (not a figure), prefixed with '#'."""
    print(f"# {text}", flush=True)


def interleaved_runs(fns: dict[str, Callable[[], float]], repeats: int = 5) -> dict[str, list[float]]:
    """Run each timing function ``repeats`` times, alternating between them so that machine noise hits all
    alike; each returns a rate (items/s). Returns every rate, in run order."""
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            rates[name].append(fn())
    return rates


def interleaved(fns: dict[str, Callable[[], float]], repeats: int = 5) -> dict[str, float]:
    """The median rate of each function over :func:`interleaved_runs`."""
    return {k: statistics.median(v) for k, v in interleaved_runs(fns, repeats).items()}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def default_dataset() -> Path:
    """The generated default dataset (data/sample); generated into a cache folder if `dvc repro` has not run."""
    path = ROOT / "data/sample"
    if (path / "train.csv").is_file():
        return path
    from whaleid.config import SampleConfig
    from whaleid.data.sample import write_dataset

    path = ROOT / ".whaleid_cache/bench/sample"
    if not (path / "train.csv").is_file():
        write_dataset(SampleConfig(), path, run=Runtime(n_jobs=-1, progress=False))
    return path


def resized_default(split: str = "train_images", fmt: str = "bmp") -> list[Path]:
    """The default dataset's ``split`` images as the train and embed stages read them: cropped to the default
    boxes and resized to the default size by the `resize` stage's code, in dataset order (cached under
    .whaleid_cache/bench/resized)."""
    from whaleid.config import CropConfig, ModelConfig
    from whaleid.data.boxes import read_boxes
    from whaleid.data.layout import load_dataset
    from whaleid.data.resize import resize_split, resized_name

    ds = load_dataset(default_dataset())
    sources = ds.train_paths() if split == "train_images" else ds.test_paths()
    out = ROOT / ".whaleid_cache/bench/resized" / fmt / split
    paths = [out / resized_name(p.name, fmt) for p in sources]
    if not all(p.is_file() for p in paths):
        out.mkdir(parents=True, exist_ok=True)
        crop = CropConfig()
        boxes = read_boxes(ds.root / "boxes.csv") if crop.boxes else None
        resize_split(
            sources,
            out,
            out.parent / f"{split}.cache",
            size=ModelConfig().img_size,
            boxes=boxes,
            margin=crop.margin,
            fmt=fmt,
            run=Runtime(progress=False),
        )
    return paths


def ours_vs_bare(
    name: str,
    ours: Callable[[], float],
    bare: Callable[[], float],
    target: float,
    context: str,
    repeats: int = 7,
    references: dict[str, Callable[[], float]] | None = None,
) -> None:
    """Interleave our pipeline's rate with a bare reference's ``repeats`` times and report the ratio of the best
    rates (as ``timeit`` advises: the least disturbed run of each is the closest to its true cost on a shared
    machine); the medians and the range of the adjacent (ours, bare) pair ratios are printed as context.
    ``references`` (name -> rate) are interleaved with the two and printed as context lines (ours / each, best
    rates), to show where the difference goes; they do not change the figure."""
    fns = {"ours": ours, "bare": bare, **(references or {})}
    runs = interleaved_runs(fns, repeats)
    pairs = [o / b for o, b in zip(runs["ours"], runs["bare"], strict=True)]
    note(
        f"{context}: best of {repeats} ours {max(runs['ours']):.0f} img/s, bare {max(runs['bare']):.0f} img/s; "
        f"medians {statistics.median(runs['ours']):.0f} and {statistics.median(runs['bare']):.0f}; "
        f"pair ratios {min(pairs):.3f}-{max(pairs):.3f} (median {statistics.median(pairs):.3f})"
    )
    for ref in references or {}:
        best = max(runs[ref])
        note(f"{ref}: best {best:.0f} img/s; ours / it {max(runs['ours']) / best:.3f}")
    ratio = max(runs["ours"]) / max(runs["bare"])
    report(name, ratio, f">= {target}", ratio >= target)
