"""The `whaleid` command: installed as a console script (pyproject.toml), usable without PYTHONPATH."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from whaleid.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_models_lists_what_the_params_train_and_submit_with(tmp_path: Path, capsys) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"fold": 1, "ensemble": {"members": ["fold3", "full"]}}))
    assert main(["models", "--params", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trained"]["fold1"] == {"path": "models/fold1/model.pt", "validation_fold": 1}
    assert out["trained"]["full"]["validation_fold"] is None
    assert out["cv"] == ["fold1", "fold3"] and out["submission"] == ["fold1", "fold3", "full"]


def test_params_prints_validated_defaults_and_bad_params_exit_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 3}}))
    assert main(["params", "--params", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train"]["epochs"] == 3 and out["threshold"]["scoring"] == "max"
    path.write_text(yaml.safe_dump({"train": {"epochz": 3}}))
    assert main(["params", "--params", str(path)]) == 2


def test_installed_command_runs_from_another_folder(tmp_path: Path) -> None:
    # `pip install -e .` (done by `make`) puts a `whaleid` console script beside the interpreter and makes the
    # package importable without PYTHONPATH.
    script = Path(sys.executable).parent / "whaleid"
    assert script.is_file(), "whaleid is not installed: run `pip install -e .` (make does)"
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    proc = subprocess.run([str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "check" in proc.stdout and "models" in proc.stdout, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-c", "import whaleid, whaleid.rule.predict; print(whaleid.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and Path(proc.stdout.strip()).parent == ROOT / "whaleid", proc.stderr


def test_check_another_dataset_skips_the_default_boxes_and_catches_foreign_ones(
    tiny_dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """crop.boxes auto follows the folder checked (its boxes.csv). An explicit CSV of the default dataset (absent
    on a fresh clone) is skipped with a warning when another folder is checked. Boxes meant for this folder but
    naming none of its images are a problem."""
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    assert main(["check", "--no-decode", "--params", str(params), str(tiny_dataset)]) == 0
    assert "not checked" not in capsys.readouterr().err  # auto: tiny_dataset/boxes.csv, checked
    p = yaml.safe_load(params.read_text())
    p["crop"]["boxes"] = "data/sample/boxes.csv"
    params.write_text(yaml.safe_dump(p))
    assert main(["check", "--no-decode", "--params", str(params), str(tiny_dataset)]) == 0
    assert "crop.boxes (data/sample/boxes.csv) not checked" in capsys.readouterr().err
    foreign = tmp_path / "boxes.csv"
    foreign.write_text("image,x1,y1,x2,y2\nelsewhere.jpg,1,1,20,20\n")
    p = yaml.safe_load(params.read_text())
    p["data"]["dir"], p["crop"]["boxes"] = str(tiny_dataset), str(foreign)
    params.write_text(yaml.safe_dump(p))
    assert main(["check", "--no-decode", "--params", str(params)]) == 2
    assert "has boxes for 1 images, none of them in" in capsys.readouterr().err


def test_check_judges_the_fold_count_against_the_dataset(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    """cv.n_folds is valid on its own (2..100) but not for a dataset whose individuals cannot fill that many folds:
    `whaleid check` says so before the split stage would."""
    params = tmp_path / "params.yaml"
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["dir"], p["crop"]["boxes"], p["cv"]["n_folds"] = str(tiny_dataset), None, 100
    params.write_text(yaml.safe_dump(p))
    assert main(["check", "--no-decode", "--params", str(params)]) == 2
    assert "cv.n_folds=100 leaves fold" in capsys.readouterr().err


def test_summary_prints_the_run_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["summary"]) == 2
    assert "metrics/cv.json is missing: run `dvc repro` first" in capsys.readouterr().err
    (tmp_path / "metrics").mkdir()
    cv = {
        "map5": 0.81234,
        "map5_known": 0.9,
        "map5_new": None,
        "threshold": 0.45,
        "folds": {"fold0": 0.8, "fold2": 0.82},
    }
    (tmp_path / "metrics/cv.json").write_text(json.dumps(cv))
    (tmp_path / "metrics/lb.json").write_text(json.dumps({"map5": None, "note": "no solution.csv"}))
    assert main(["summary"]) == 0
    assert capsys.readouterr().out.strip() == (
        "summary: CV MAP@5 0.8123 (known 0.9000, new n/a; validation fold0, fold2, threshold 0.45) | no local LB "
        "(no solution.csv) | submissions/submission.csv | compare experiments: whaleid exps"
    )
