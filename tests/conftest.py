"""Shared fixtures: a tiny generated dataset (rendered once per session)."""

from __future__ import annotations

import os

# Under pytest-xdist (`pytest -n 2`, as `make test` runs), each worker and the DVC stages it starts get an equal
# share of the cores: torch's thread pools, spinning on cores another worker is using, slow both many-fold. Set
# before torch is imported; a value the caller set is kept.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _share)

from pathlib import Path

import pytest
from tinyrepo import DVC, make_repo, run

from whaleid.config import SampleConfig, replace
from whaleid.core.runtime import Runtime
from whaleid.data.sample import write_dataset

TINY = SampleConfig(n_train=160, n_test=60, n_species=3, img_size=32, seed=7)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "data"
    write_dataset(TINY, out, run=Runtime(n_jobs=1, progress=False))
    return out


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny project after one full `dvc repro`, committed, and what the run printed. Run once per session:
    the end-to-end tests start from private copies of it (``tinyrepo.copy_repo``), not from a `dvc repro` each."""
    repo = tmp_path_factory.mktemp("reproduced") / "repo"
    env = make_repo(repo)
    out = run([*DVC, "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny run"], repo, env)
    return repo, out


@pytest.fixture()
def dataset_copy(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset that a test may break."""
    import shutil

    dst = tmp_path / "data"
    shutil.copytree(tiny_dataset, dst)
    return dst


def tiny_config(**changes: object) -> SampleConfig:
    return replace(TINY, **changes)
