"""A throwaway git + DVC copy of the project with a tiny config, for the end-to-end tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COPY = ["dvc.yaml", "params.yaml", "requirements.txt", "stages", "whaleid", ".dvc/config", ".dvc/plots", ".gitignore"]

TINY_PARAMS = {
    # The easy scene (the fin large and central): at 32 px and a few epochs the wild one leaves the model nothing to
    # learn, and these tests are about the pipeline's mechanics. Test boxes stay out of boxes.csv, so the detector
    # runs.
    "sample": {
        "n_train": 240,
        "n_test": 60,
        "n_species": 3,
        "img_size": 32,
        "subject_min": 0.55,
        "subject_max": 0.85,
        "off_centre": 0.0,
        "clutter": 0,
        "occlusion": 0.0,
        "mark_contrast_min": 1.0,
    },
    "cv": {"n_folds": 4},
    "model": {"img_size": 32, "embedding_dim": 32},
    # 6 epochs (a second or two): long enough for tests/test_interrupt.py to stop training between checkpoints.
    "train": {"epochs": 6, "batch_size": 32, "eval_every": 1},
    "detect": {"img_size": 32, "epochs": 10},  # ~3 s: boxes good enough that pseudo-labelling finds confident photos
    "runtime": {"num_workers": 0, "n_jobs": 1},
}

DVC = [sys.executable, "-m", "dvc"]


def make_repo(repo: Path, overrides: dict[str, dict] | None = None) -> dict[str, str]:
    """Copy the project into ``repo`` with TINY_PARAMS (+ ``overrides``), git-init it; return the env to use."""
    repo.mkdir(parents=True)
    for item in COPY:
        src, dst = ROOT / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for changes in (TINY_PARAMS, overrides or {}):
        for block, values in changes.items():
            params[block].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = repo_env(repo)
    run(["git", "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny"], repo, env)
    return env


def repo_env(repo: Path) -> dict[str, str]:
    """The environment the commands in ``repo`` run with: this interpreter first on PATH, the repo's own code."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(repo),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }


def copy_repo(src: Path, dst: Path) -> dict[str, str]:
    """A private copy of a tiny repo (git history, DVC cache, outputs) at ``dst``; return the env to use there.
    The copy's outputs are plain files (the hardlinks into the cache are not kept): DVC sees the same hashes."""
    shutil.copytree(src, dst, symlinks=True)
    return repo_env(dst)


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout + proc.stderr


def snapshot(repo: Path) -> dict[str, bytes]:
    """The bytes of the results that must not depend on interruptions or reruns."""
    files = [
        "models/fold0/model.pt",
        "submissions/submission.csv",
        *sorted(str(p.relative_to(repo)) for p in (repo / "metrics").glob("*.json")),
    ]
    return {f: (repo / f).read_bytes() for f in files}


def checkpoint_epoch(path: Path) -> int:
    """The epoch a training checkpoint was written after; 0 while it is absent or being replaced."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - absent or being replaced right now
        return 0


def sigint_as_default() -> None:
    """``preexec_fn`` of a command a test interrupts with SIGINT: the default disposition, so that Python raises
    KeyboardInterrupt in it even when the test runner was started with SIGINT ignored (a background job of a
    script, ``nohup``), which a child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
