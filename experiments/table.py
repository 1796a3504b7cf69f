"""Build experiments/RESULTS.md from `dvc exp show --json -A`: one row per technique (experiments named
``<technique>-s<seed>``, queued by experiments/queue.sh), CV and LB MAP@5 as the mean of the seeds with their
spread (max - min), and the change against the starter-equivalent config and against starter + augmentation.

Usage: python experiments/table.py [--out experiments/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROWS = {
    "starter": "starter-equivalent: plain ArcFace (s=20, m=0.15), no augmentation, no TTA",
    "aug": "+ augmentation (affine, colour, blur): **base for the rows below**",
    "subcenter": "base + sub-center ArcFace (k=3)",
    "dynmargin": "base + dynamic margins (0.1 frequent .. 0.2 rare, n^-1/4)",
    "mwarmup": "base + margin warm-up (3 epochs)",
    "species": "base + species head (weight 0.2)",
    "crop": "base + crops to boxes.csv (margin 0.1)",
    "fliptta": "base + flip TTA",
    "vote": "base + vote scoring (sim^4)",
    "perspecies": "base + per-species thresholds",
    "share": "base + threshold by expected share (0.16)",
    "ensfold": "base + ensemble of the fold 0 and fold 1 models (submission only; CV = base)",
    "fullfit": "base + full fit on all images (submission only; CV = base)",
    "cropvote": "base + crops + vote scoring",
    "best": "base + crops + vote scoring + species head",
    "augtorch": "base, augmentation batched in torch on the device (`augment.backend: torch`)",
    "croptorch": "base + crops, augmentation batched in torch: **the current default**",
}
NAME = re.compile(r"^(?P<tech>[a-z]+)-s(?P<seed>\d+)$")


def collect(tree: list[dict]) -> dict[str, dict[int, tuple[float, float]]]:
    found: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    for commit in tree:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                m = NAME.match(rev.get("name") or "")
                data = rev.get("data") or {}
                metrics = data.get("metrics") or {}
                if not m or "metrics/lb.json" not in metrics:
                    continue
                cv = metrics["metrics/cv.json"]["data"]["map5"]
                lb = metrics["metrics/lb.json"]["data"]["map5"]
                found[m["tech"]][int(m["seed"])] = (float(cv), float(lb))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/RESULTS.md"))
    parser.add_argument("--json", type=Path, help="read this `dvc exp show --json -A` output instead of running it")
    args = parser.parse_args()
    text = (
        args.json.read_text()
        if args.json
        else subprocess.run(
            [sys.executable, "-m", "dvc", "exp", "show", "--json", "-A"], capture_output=True, text=True, check=True
        ).stdout
    )
    found = collect(json.loads(text))

    def mean(tech: str, i: int) -> float | None:
        runs = found.get(tech, {})
        return sum(v[i] for v in runs.values()) / len(runs) if runs else None

    lines = [
        "# Identification quality, technique by technique",
        "",
        "Default dataset (`data/sample`), fold 0, `test_resnet` at 64 px from random initialisation, 25 epochs on",
        "2 CPU cores. Each row is one run per seed listed (`train.seed`); values are their mean, ± half their",
        "spread (max - min) / 2. Δ columns compare LB MAP@5 means. Regenerate with `bash experiments/queue.sh`",
        '(and `ONLY="crop croptorch" SEEDS="44 45" bash experiments/queue.sh` for the extra seeds),',
        "`dvc exp run --run-all`, then `python experiments/table.py`.",
        "",
        "Augmentation: every row but the last two ran with per-image albumentations (`augment.backend:",
        "albumentations`, the default when they were measured); the last two run the same augmentation params",
        "batched in torch on the device (`augment.backend: torch`, several times cheaper per image; `opencv` is the default now).",
        "",
        "| config | seeds | CV MAP@5 | LB MAP@5 | Δ LB vs starter | Δ LB vs base |",
        "|---|---|---|---|---|---|",
    ]
    starter, base = mean("starter", 1), mean("aug", 1)
    for tech, label in ROWS.items():
        runs = found.get(tech)
        if not runs:
            continue
        cvs, lbs = [v[0] for v in runs.values()], [v[1] for v in runs.values()]

        def fmt(xs: list[float]) -> str:
            return f"{sum(xs) / len(xs):.4f} ± {(max(xs) - min(xs)) / 2:.4f}"

        lb = sum(lbs) / len(lbs)
        d_starter = f"{lb - starter:+.4f}" if starter is not None else ""
        d_base = f"{lb - base:+.4f}" if base is not None and tech not in ("starter", "aug") else ""
        seeds = ", ".join(str(s) for s in sorted(runs))
        lines.append(f"| {label} | {seeds} | {fmt(cvs)} | {fmt(lbs)} | {d_starter} | {d_base} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
