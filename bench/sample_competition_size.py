"""Benchmark: generate a competition-size dataset (51,033 train / 27,956 test at 64 px) on every core.

Prints wall time and throughput, and the long-tail statistics of what was generated. Target: under 10 minutes.
Usage: python -m bench.sample_competition_size [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from whaleid.config import SampleConfig
from whaleid.core.runtime import Runtime
from whaleid.data.sample import write_dataset

TARGET_S = 600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="write the dataset here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    cfg = SampleConfig(n_train=51033, n_test=27956, img_size=64)
    out = args.keep or tempfile.mkdtemp(prefix="whaleid-bench-")
    try:
        start = time.perf_counter()
        plan = write_dataset(
            cfg, os.path.join(out, "data") if not args.keep else out, run=Runtime(n_jobs=-1, progress=False)
        )
        seconds = time.perf_counter() - start
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    counts = plan.train["individual_id"].value_counts()
    n_images = len(plan.train) + len(plan.test)
    print(
        f"# {len(plan.train)} train / {len(plan.test)} test images, {len(counts)} train individuals "
        f"({(counts == 1).mean():.1%} seen once), {plan.test['_new'].mean():.1%} of test new; "
        f"{n_images / seconds:.0f} img/s on {os.cpu_count()} cores"
    )
    verdict = "PASS" if seconds < TARGET_S else "FAIL"
    print(f"sample_competition_size_seconds: {seconds:.1f} (target: < {TARGET_S:.0f}) {verdict}")


if __name__ == "__main__":
    main()
