"""Every benchmark module imports (a rename or a removed helper fails here, in CI, not in `make bench`), and
`make bench` runs every benchmark under bench/."""

from __future__ import annotations

import importlib
import re

import pytest

from whaleid.pipeline.codedeps import ROOT

HELPERS = {"__init__", "common", "folders_to_kaggle"}  # not benchmarks: shared code and a dataset converter
GPU = {"gpu_check"}  # `make gpu-check`: the GPU paths, run on a lent GPU machine
MODULES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", MODULES)
def test_bench_module_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    if name not in HELPERS:
        assert callable(module.main), f"bench/{name}.py has no main()"


def test_make_bench_runs_every_benchmark() -> None:
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^BENCHES := (.*)$", makefile, re.M).group(1).split()
    assert sorted(listed) == sorted(set(MODULES) - HELPERS - GPU)
    assert "python -m bench.gpu_check" in makefile


def test_gpu_check_falls_back_on_cpu_naming_what_it_skips(tmp_path, capsys) -> None:
    import json

    import torch

    from bench import gpu_check

    if torch.cuda.is_available():
        pytest.skip("the CPU fallback is for machines without CUDA")
    results = gpu_check.main(["--only", "ddp", "faiss", "cuda_tests", "--out", str(tmp_path / "g.json")])
    by_name = {r["name"]: r for r in results}
    assert by_name["ddp_gloo_one_process"]["ok"] is True  # a real gloo group of one, through whaleid.model.distributed
    for name in ("ddp_nccl_one_process", "faiss_gpu_topk_identical", "cuda_tests", "train_peak_memory_gib"):
        assert by_name[name]["skipped"], name
    out = capsys.readouterr().out
    assert "ddp_gloo_one_process: 1 (target: 1 (init, all-reduce, step)) PASS" in out
    assert "faiss_gpu_topk_identical: SKIP (" in out
    assert json.loads((tmp_path / "g.json").read_text())["results"] == results
