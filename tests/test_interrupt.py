"""Interruption and determinism, end to end under `dvc repro` on a tiny config.

Reference: one full `dvc repro`. Determinism: `dvc repro --force` gives byte-identical model, metrics and
submission. Interruption: for SIGINT, SIGTERM and SIGKILL, DVC first forgets the trained model (its dvc.lock
entry and run cache: as on the first run of new params), `dvc repro` is started, its whole process group is sent
the signal once training has written its second epoch checkpoint, and a plain `dvc repro` then resumes from
that checkpoint; the final model, metrics and submission equal the reference byte for byte.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from tinyrepo import DVC, TINY_PARAMS, checkpoint_epoch, copy_repo, run, sigint_as_default, snapshot

from whaleid.model.checkpoint import PAUSE_ENV

EPOCHS = TINY_PARAMS["train"]["epochs"]  # the reference run trains this many (6)
CHECKPOINT = Path(".whaleid_cache/checkpoints/fold0/last.pt")


@pytest.fixture(scope="module")
def reference(
    reproduced: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str], dict[str, bytes]]:
    repo = tmp_path_factory.mktemp("interrupt") / "repo"
    env = copy_repo(reproduced[0], repo)
    assert not (repo / CHECKPOINT).exists(), "the checkpoint must go once model.pt is written"
    return repo, env, snapshot(repo)


@pytest.mark.slow
def test_repro_force_is_deterministic(reference: tuple[Path, dict[str, str], dict[str, bytes]]) -> None:
    repo, env, ref = reference
    out = run([*DVC, "repro", "--force"], repo, env)
    assert "Running stage 'train'" in out and "Resuming" not in out
    again = snapshot(repo)
    assert again.keys() == ref.keys()
    for name in ref:
        assert again[name] == ref[name], f"{name} differs between two `dvc repro --force` runs"


def _forget_training(repo: Path) -> None:
    """Make DVC see training as never run: drop its dvc.lock entry and the run cache."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock["stages"].pop("train")
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.rmtree(repo / ".dvc/cache/runs", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_killed_training_resumes_to_the_same_result(
    reference: tuple[Path, dict[str, str], dict[str, bytes]], sig: signal.Signals
) -> None:
    repo, env, ref = reference
    ckpt = repo / CHECKPOINT
    _forget_training(repo)
    proc = subprocess.Popen(
        [*DVC, "repro"],
        cwd=repo,
        env={**env, PAUSE_ENV: "2"},  # a pause after each checkpoint: the tiny run's epochs last milliseconds
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=sigint_as_default,  # SIGINT must reach it even if this run ignores SIGINT
    )
    deadline = time.monotonic() + 300
    while checkpoint_epoch(ckpt) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be interrupted:\n{proc.stdout.read()}"
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    if sig != signal.SIGKILL:
        assert f"stopped by {sig.name}" in out, out
    done = checkpoint_epoch(ckpt)
    assert 2 <= done < EPOCHS, f"checkpoint after epoch {done}"
    # The interrupted run left no half-written file next to the outputs.
    leftovers = [p for p in repo.rglob(".*.tmp") if ".dvc" not in p.parts and ".git" not in p.parts]
    assert not leftovers, leftovers

    out = run([*DVC, "repro"], repo, env)
    assert f"Resuming from {CHECKPOINT} after epoch {done} of {EPOCHS}" in out, out
    after = snapshot(repo)
    for name in ref:
        assert after[name] == ref[name], f"{name} differs from the uninterrupted run after {sig.name}"
    assert not ckpt.exists()
