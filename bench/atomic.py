"""Benchmark: atomic writes of many small files into one folder, as the resize stage writes one file per photo.

Writes 2,000 and then 8,000 files (a few hundred bytes each, through ``whaleid.core.atomic.write_bytes``) into fresh folders
and compares the time per file. A folder scan per file (as the stale-temporary cleaning once did) makes the cost per
file grow with the folder, so 8k files cost 4x more per file than 2k; written linearly, the ratio stays near 1.
Target: per-file cost at 8k <= 1.5x that at 2k.

    python -m bench.atomic [--small 2000] [--large 8000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import note, report
from whaleid.core.atomic import write_bytes

TARGET = 1.5


def per_file_seconds(folder: Path, n: int) -> float:
    data = b"x" * 300
    start = time.perf_counter()
    for i in range(n):
        write_bytes(folder / f"{i:06d}.bmp", data)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=8000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="whaleid-bench-atomic-"))
    try:
        per_file = {}
        for n in (args.small, args.large, args.small):  # small twice: the better of two, as the large one runs once
            t = per_file_seconds(Path(tempfile.mkdtemp(dir=tmp)), n)
            per_file[n] = min(per_file.get(n, t), t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    small, large = per_file[args.small], per_file[args.large]
    note(
        f"atomic write_bytes per file: {small * 1e6:.0f} us with {args.small} files in the folder, "
        f"{large * 1e6:.0f} us with {args.large}"
    )
    ratio = large / small
    report(
        "atomic_write_growth",
        ratio,
        f"<= {TARGET}x per file at {args.large // args.small}x the files",
        ratio <= TARGET,
        "{:.2f}x",
    )


if __name__ == "__main__":
    main()
