"""`whaleid exps`: rows, differing params and the fold summary from a hand-made `dvc exp show --json` tree."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from whaleid.cli.main import main
from whaleid.pipeline.exps import collect, differing, fold_summary, render


def _data(fold: int, seed: int, lr: float, cv: float | None, lb: float | None = None) -> dict:
    metrics = {}
    if cv is not None:
        metrics["metrics/cv.json"] = {"data": {"map5": cv, "map5_known": cv + 0.1, "map5_new": cv - 0.1}}
    if lb is not None:
        metrics["metrics/lb.json"] = {"data": {"map5": lb}}
    params = {
        "fold": fold,
        "train": {"seed": seed, "lr": lr, "epochs": 25},
        "runtime": {"num_workers": fold},
        "ensemble": {"members": []},
    }
    return {"params": {"params.yaml": {"data": params}}, "metrics": metrics}


TREE = [
    {"rev": "workspace", "name": None, "data": _data(0, 42, 0.003, 0.80, 0.60), "experiments": []},
    {
        "rev": "abcdef1234",
        "name": "main",
        "data": _data(0, 42, 0.003, 0.80, 0.60),
        "experiments": [
            {"name": "f1", "revs": [{"rev": "1", "name": "f1", "data": _data(1, 42, 0.003, 0.70)}]},
            {"name": "f2", "revs": [{"rev": "2", "name": "f2", "data": _data(2, 42, 0.003, 0.75)}]},
            {"name": "lr", "revs": [{"rev": "3", "name": "lr", "data": _data(0, 42, 0.001, 0.65, 0.5)}]},
            {"name": "s43", "revs": [{"rev": "4", "name": "s43", "data": _data(0, 43, 0.003, 0.78)}]},
            {"name": "queued", "revs": [{"rev": "5", "name": "queued", "data": {}}]},
            {
                "name": "bad",
                "revs": [{"rev": "6", "name": "bad", "error": {"msg": "x"}, "data": _data(3, 42, 0.003, 0.1)}],
            },
        ],
    },
]


def test_rows_and_differing_params() -> None:
    rows = collect(TREE)
    assert [r["name"] for r in rows] == ["workspace", "main", "f1", "f2", "lr", "s43"]
    assert rows[4]["cv"] == 0.65 and rows[4]["lb"] == 0.5 and rows[2]["lb"] is None
    assert differing(rows) == ["train.lr"]  # fold, seed have their own columns; runtime.* never changes results


def test_fold_summary_is_mean_and_sample_std_over_one_config() -> None:
    summary = fold_summary(collect(TREE))
    assert len(summary) == 1  # lr and s43 differ by more than the fold
    (group,) = summary
    assert group["folds"] == "0,1,2"
    cvs = [0.80, 0.70, 0.75]
    assert abs(group["cv_mean"] - statistics.mean(cvs)) < 1e-12
    assert abs(group["cv_std"] - statistics.stdev(cvs)) < 1e-12


def test_command_prints_the_table(tmp_path: Path, capsys) -> None:
    path = tmp_path / "show.json"
    path.write_text(json.dumps(TREE))
    assert main(["exps", "--json-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == render(collect(TREE))
    header = out.splitlines()[0].split()
    assert header[:4] == ["experiment", "fold", "seed", "train.lr"]
    assert "0.7500 ± 0.0500" in out
    lr_row = next(line for line in out.splitlines() if line.startswith("lr "))
    assert lr_row.split() == ["lr", "0", "42", "0.001", "0.6500", "0.5000", "0.7500", "0.5500"]
