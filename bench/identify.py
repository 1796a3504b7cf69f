"""Benchmark: `whaleid identify` against a finished run's gallery (default model, detector, SIFT), three ways:
the CLI on one photo and on 20 (wall time, process start and imports included) and the Python API per photo once
the gallery is open (`Identifier.open(...).identify([photo])`, median of repeated single-photo calls).
Targets: CLI one photo < 5 s on 2 cores, API < 100 ms per photo. Run from the project after `dvc repro`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI_TARGET_S = 5.0
API_TARGET_MS = 100.0


def cli_seconds(photos: list[Path], gallery: str) -> float:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "whaleid.cli.main",
                "identify",
                *map(str, photos),
                "--gallery",
                gallery,
                "--format",
                "csv",
                "--out",
                str(Path(tmp) / "out.csv"),
            ],
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", default="gallery")
    parser.add_argument("--photos", default="data/sample/test_images", help="folder of photos to identify")
    parser.add_argument("--repeats", type=int, default=20, help="single-photo API calls timed (median)")
    args = parser.parse_args()
    if not (Path(args.gallery) / "manifest.json").is_file():
        sys.exit(f"{args.gallery}: no gallery; run `dvc repro` first (stage gallery builds it).")
    photos = sorted(Path(args.photos).iterdir())[:20]

    one = statistics.median(cli_seconds(photos[:1], args.gallery) for _ in range(3))
    twenty = cli_seconds(photos, args.gallery)

    from whaleid.core.runtime import Runtime
    from whaleid.gallery.identify import Identifier

    started = time.perf_counter()
    ident = Identifier.open(args.gallery, Runtime(progress=False))
    opened = time.perf_counter() - started
    ident.identify(photos[:1])  # warm-up: first-call allocations
    per_photo = []
    for i in range(args.repeats):
        started = time.perf_counter()
        ident.identify([photos[i % len(photos)]])
        per_photo.append(1000 * (time.perf_counter() - started))
    api = statistics.median(per_photo)
    print(f"cli one photo: {one:.2f} s wall (target < {CLI_TARGET_S:g} s) {'PASS' if one < CLI_TARGET_S else 'FAIL'}")
    print(f"cli 20 photos: {twenty:.2f} s wall ({1000 * twenty / len(photos):.0f} ms a photo)")
    print(f"api open: {opened:.2f} s (gallery, models and detector loaded once)")
    print(
        f"api per photo: {api:.0f} ms median of {args.repeats} (target < {API_TARGET_MS:g} ms) "
        f"{'PASS' if api < API_TARGET_MS else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
