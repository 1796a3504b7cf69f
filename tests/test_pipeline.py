"""End to end: `dvc repro`, then `dvc exp run -S fold=1`, on a tiny config in a temporary copy of the repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COPY = ["dvc.yaml", "params.yaml", "stages", "whaleid", ".dvc/config", ".gitignore"]

TINY_PARAMS = {
    "sample": {"n_train": 240, "n_test": 60, "n_species": 3, "img_size": 32},
    "cv": {"n_folds": 3},
    "model": {"img_size": 32, "embedding_dim": 32},
    "train": {"epochs": 2, "batch_size": 32, "eval_every": 1},
    "runtime": {"num_workers": 0, "n_jobs": 1},
}


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout + proc.stderr


def metric_values(tree: object, name: str) -> list[float]:
    """Every value of metric file ``name`` -> map5 found anywhere in `dvc exp show --json` output."""
    found: list[float] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == name and isinstance(value, dict) and isinstance(value.get("data"), dict):
                if value["data"].get("map5") is not None:
                    found.append(float(value["data"]["map5"]))
            else:
                found.extend(metric_values(value, name))
    elif isinstance(tree, list):
        for item in tree:
            found.extend(metric_values(item, name))
    return found


@pytest.mark.slow
def test_repro_then_experiment(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in COPY:
        src, dst = ROOT / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for block, values in TINY_PARAMS.items():
        params[block].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny"], repo, env)

    out = run([*dvc, "repro"], repo, env)
    assert "Running stage 'train'" in out
    cv = json.loads((repo / "metrics/cv.json").read_text())
    lb = json.loads((repo / "metrics/lb.json").read_text())
    assert 0.0 <= cv["map5"] <= 1.0 and 0.0 <= lb["map5"] <= 1.0 and cv["fold"] == 0
    sub = pd.read_csv(repo / "submissions/submission.csv", dtype=str)
    assert len(sub) == 60 and all(len(set(p.split())) == 5 for p in sub["predictions"])
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline run"], repo, env)

    # Nothing changed: nothing reruns.
    assert "Running stage" not in run([*dvc, "repro"], repo, env)

    out = run([*dvc, "exp", "run", "-S", "fold=1"], repo, env)
    reran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert reran == {"train", "embed", "knn", "threshold", "submit", "score", "baseline"}, reran

    out = run([*dvc, "exp", "run", "-S", "threshold.step=0.1"], repo, env)
    reran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    # submit and score rerun only if cv.json changed (DVC skips a stage whose inputs hash the same).
    assert "threshold" in reran and reran <= {"threshold", "submit", "score"}, reran

    shown = json.loads(run([*dvc, "exp", "show", "--json"], repo, env))
    cv_values = metric_values(shown, "metrics/cv.json")
    lb_values = metric_values(shown, "metrics/lb.json")
    assert len(cv_values) >= 3 and len(lb_values) >= 3, shown
    assert cv["map5"] in cv_values
