"""End to end: `dvc repro`, then `dvc exp run -S fold=1`, on a tiny config in a temporary copy of the repo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from tinyrepo import DVC, copy_repo, run


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
def test_repro_then_experiment(reproduced: tuple[Path, str], tmp_path: Path) -> None:
    origin, out = reproduced  # one `dvc repro` of the tiny project, committed
    repo = tmp_path / "repo"
    env = copy_repo(origin, repo)
    dvc = DVC
    assert "Running stage 'train'" in out
    cv = json.loads((repo / "metrics/cv.json").read_text())
    lb = json.loads((repo / "metrics/lb.json").read_text())
    assert 0.0 <= cv["map5"] <= 1.0 and 0.0 <= lb["map5"] <= 1.0 and cv["fold"] == 0
    # cv.json holds what `dvc metrics show` tabulates; the retrieval and shortlist figures are beside it.
    details = json.loads((repo / "metrics/cv_details.json").read_text())
    assert {"retrieval", "shortlist", "valid_images"} <= set(details) and not {"retrieval", "shortlist"} & set(cv)
    assert set(cv["species"]) == set(details["species"]) and all(isinstance(v, float) for v in cv["species"].values())
    sub = pd.read_csv(repo / "submissions/submission.csv", dtype=str)
    assert len(sub) == 60 and all(len(set(p.split())) == 5 for p in sub["predictions"])

    # Nothing changed: nothing reruns but `weights`, which always hashes the weights (none here) to the same JSON.
    assert stages_run(run([*dvc, "repro"], repo, env)) == {"weights"}

    # A DVC remote round trip: push, clone the git repo elsewhere, pull: the same model and submission bytes.
    run([*dvc, "remote", "add", "-d", "store", str(tmp_path / "remote")], repo, env)
    run(["git", "commit", "-qam", "remote"], repo, env)
    run([*dvc, "push"], repo, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "models/fold0/model.pt").exists()
    run([*dvc, "pull"], clone, env)
    for name in ("models/fold0/model.pt", "submissions/submission.csv", "data/final/test.npz"):
        assert (clone / name).read_bytes() == (repo / name).read_bytes(), name
    assert stages_run(run([*dvc, "repro"], clone, env)) == {"weights"}

    # Folds side by side, as docs/scaling.md does it: experiments queued, then run by two DVC queue workers at once.
    for fold in (1, 2):
        run([*dvc, "exp", "run", "--queue", "-S", f"fold={fold}", "--name", f"q-fold{fold}"], repo, env)
    run([*dvc, "queue", "start", "-j", "2"], repo, env)
    status = wait_for_queue(repo, env)
    assert all(
        f"q-fold{fold}" in line and "Success" in line
        for fold in (1, 2)
        for line in status.splitlines()
        if f"q-fold{fold}" in line
    ), status
    for fold in (1, 2):
        reran = stages_run(run([*dvc, "queue", "logs", f"q-fold{fold}"], repo, env))
        assert reran == {
            "weights",
            "train",
            "embed",
            "ensemble",
            "knn",
            "local",
            "pseudo",
            "threshold",
            "submit",
            "score",
            "baseline",
            "report",
            "gallery",
        }, reran
    queued = json.loads(run([*dvc, "exp", "show", "--json"], repo, env))
    assert len(metric_values(queued, "metrics/cv.json")) >= 3, queued  # the workspace's, and each queued fold's

    out = run([*dvc, "exp", "run", "-S", "threshold.step=0.1"], repo, env)
    reran = stages_run(out) - {"weights"}
    # The baseline is scored with the same rule; submit and score rerun only if the fitted rule changed (DVC skips a
    # stage whose inputs hash the same). The pseudo stage reads the threshold params too (it passes data through).
    # The match report and the gallery carry the rule, so they follow it.
    assert (
        {"pseudo", "threshold", "baseline"}
        <= reran
        <= {"pseudo", "threshold", "baseline", "submit", "score", "report", "gallery"}
    ), reran

    # One pseudo-label round on the blended scores (back on fold 0, whose model DVC restores from its run cache):
    # no stage before knn reruns, and CV stays on fold 0.
    out = run([*dvc, "exp", "run", "-S", "fold=0", "-S", "pseudo.rounds=1", "-S", "blend.knn_weight=0.5"], repo, env)
    assert {"knn", "pseudo", "threshold"} <= stages_run(out) and "train" not in stages_run(out), out
    history = json.loads((repo / "metrics/pseudo.json").read_text())["history"]
    assert [h["round"] for h in history] == [0, 1] and history[1]["pseudo_labels"] >= 1, history
    chosen = pd.read_csv(repo / "data/rounds/round1/pseudo_labels.csv")
    assert set(chosen["image"]) <= set(sub["image"]) and len(chosen) <= 0.3 * len(sub), chosen
    folds = pd.read_csv(repo / "data/prepared/folds.csv")
    valid = np.load(repo / "data/rounds/valid/fold0.npz")
    assert set(valid["query_images"]) == set(folds["image"][folds["fold"] == 0])
    assert not set(valid["gallery_images"]) & set(folds["image"][folds["fold"] == 0])
    assert json.loads((repo / "metrics/cv.json").read_text())["map5"] == history[1]["cv_map5"]

    shown = json.loads(run([*dvc, "exp", "show", "--json"], repo, env))
    cv_values = metric_values(shown, "metrics/cv.json")
    lb_values = metric_values(shown, "metrics/lb.json")
    assert len(cv_values) >= 3 and len(lb_values) >= 3, shown
    assert cv["map5"] in cv_values


def wait_for_queue(repo: Path, env: dict[str, str], timeout: float = 600) -> str:
    """Poll `dvc queue status` until nothing is queued or running; return the last status table."""
    deadline = time.monotonic() + timeout
    while True:
        status = run([*DVC, "queue", "status"], repo, env)
        if not any(word in status for word in ("Queued", "Running")) or time.monotonic() > deadline:
            return status
        time.sleep(2)


def stages_run(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


@pytest.mark.slow
def test_members_train_in_their_own_stages_once(reproduced: tuple[Path, str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    env = copy_repo(reproduced[0], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["cv"]["n_folds"] == 4 and params["fold"] == 0
    params["ensemble"]["members"] = ["fold1", "fold3"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dag = run([*DVC, "dag"], repo, env)
    assert "member@fold1" in dag and "member@fold3" in dag and "member_embed@fold3" in dag
    # Members added to a finished run: they train and embed; the fold-0 model (and its embeddings) is kept.
    out = run([*DVC, "repro"], repo, env)
    assert {"member@fold1", "member@fold3", "member_embed@fold1", "member_embed@fold3", "ensemble"} <= stages_run(out)
    assert not {"train", "embed", "sample", "resize", "detect"} & stages_run(out), out
    assert all((repo / f"models/fold{f}/model.pt").is_file() for f in (0, 1, 3))
    # CV out of fold over the three fold models' validation folds, with each fold's own MAP@5.
    cv = json.loads((repo / "metrics/cv.json").read_text())
    folds = pd.read_csv(repo / "data/prepared/folds.csv")
    assert set(cv["folds"]) == {"fold0", "fold1", "fold3"}
    details = json.loads((repo / "metrics/cv_details.json").read_text())
    assert details["valid_images"] == int(folds["fold"].isin([0, 1, 3]).sum())
    assert min(cv["folds"].values()) <= cv["folds_mean"] <= max(cv["folds"].values())
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "three fold models"], repo, env)
    assert stages_run(run([*DVC, "repro"], repo, env)) == {"weights"}  # nothing is trained twice
    status = run([*DVC, "status"], repo, env)
    assert status.split() == ["weights:", "always", "changed"], status  # every other stage is up to date

    # -S fold=2: the fold-2 model and what depends on it; the members are not touched.
    out = run([*DVC, "exp", "run", "-S", "fold=2"], repo, env)
    assert stages_run(out) == {
        "weights",
        "train",
        "embed",
        "ensemble",
        "knn",
        "local",
        "pseudo",
        "threshold",
        "submit",
        "score",
        "baseline",
        "report",
        "gallery",
    }, out
    assert set(json.loads((repo / "metrics/cv.json").read_text())["folds"]) == {"fold1", "fold2", "fold3"}

    # fold 1 becomes the `fold` model: the model member@fold1 trained is restored from DVC's run cache.
    out = run([*DVC, "exp", "run", "-S", "fold=1", "-S", "ensemble.members=[]"], repo, env)
    assert "train" not in stages_run(out) and "Stage 'train' is cached" in out, out
