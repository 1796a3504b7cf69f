"""whaleid.core.memory: glibc's thresholds raised, so that freeing and reallocating a batch-sized block reuses
mapped pages instead of faulting them in again; the opt-outs leave glibc alone. Page faults are counted, not timed
(bench/allocator.py times what it buys)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from whaleid.core import memory
from whaleid.pipeline.codedeps import ROOT

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# One round holds four 4 MB blocks at once and frees them, as a training step does its activations (numpy's
# buffers go straight to malloc); after a warm-up round, print the minor page faults per round and what
# tune_malloc returned.
PROBE = """
import json, resource, numpy as np
from whaleid.core.memory import tune_malloc
tuned = tune_malloc()
def round_():
    blocks = [np.ones(4_000_000, np.uint8) for _ in range(4)]
    del blocks
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    round_()
print(json.dumps({"tuned": tuned, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20}))
"""


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (memory.ENV, *memory.GLIBC_VARIABLES)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's")
def test_tuned_malloc_reuses_pages_that_the_default_faults_in_again() -> None:
    tuned, default = probe(), probe(WHALEID_MALLOC="default")
    assert tuned["tuned"] is True and default["tuned"] is False
    # 16 MB is 3,900 pages: glibc's default gives the freed heap top back and faults it all in again next round
    # (3,874 a round measured); the tuned process keeps the pages mapped
    assert tuned["faults"] < 10
    assert default["faults"] > 2000


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's")
def test_glibc_own_variables_are_left_to_rule() -> None:
    assert probe(MALLOC_TRIM_THRESHOLD_="131072")["tuned"] is False


def test_every_stage_and_the_command_tune_first() -> None:
    for path in ("whaleid/pipeline/stage.py", "whaleid/cli/main.py"):
        source = (ROOT / path).read_text()
        assert source.index("tune_malloc()") < source.index("try:\n"), path
