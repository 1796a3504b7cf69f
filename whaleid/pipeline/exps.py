"""``whaleid exps``: the experiments in the few columns people compare, and CV averaged over fold experiments.

Reads ``dvc exp show --json`` (the workspace, the commit and its experiments) and prints one row per experiment:
its name, ``fold``, ``train.seed``, every other param whose value differs between the rows, CV MAP@5, LB MAP@5 (when
the dataset has a solution), and CV MAP@5 of known and of new individuals. A second table averages CV over
experiments that differ only by ``fold`` (mean ± standard deviation): the k-fold CV of one configuration.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import defaultdict
from typing import Any

PARAMS_FILE = "params.yaml"
CV_FILE = "metrics/cv.json"
LB_FILE = "metrics/lb.json"
FIXED = ("fold", "train.seed")
IGNORED = ("runtime.",)  # never changes results


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _metric(data: dict[str, Any], file: str, key: str) -> float | None:
    value = (((data.get("metrics") or {}).get(file) or {}).get("data") or {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def _row(name: str, data: dict[str, Any]) -> dict[str, Any]:
    params = flatten((((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data")) or {})
    return {
        "name": name,
        "params": params,
        "cv": _metric(data, CV_FILE, "map5"),
        "lb": _metric(data, LB_FILE, "map5"),
        "known": _metric(data, CV_FILE, "map5_known"),
        "new": _metric(data, CV_FILE, "map5_new"),
    }


def _short(rev: object) -> str:
    text = str(rev or "")
    return text[:7] if len(text) == 40 else text


def collect(tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows from ``dvc exp show --json``: the workspace and each commit (named by DVC or by short rev), then every
    experiment of each commit (a queued or failed one, without data, is left out)."""
    rows = []
    for commit in tree:
        if commit.get("data"):
            rows.append(_row(commit.get("name") or _short(commit.get("rev")), commit["data"]))
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("data") and not rev.get("error"):
                    rows.append(_row(rev.get("name") or exp.get("name") or _short(rev.get("rev")), rev["data"]))
    return rows


def differing(rows: list[dict[str, Any]]) -> list[str]:
    """Params (other than fold and seed, and runtime.*) whose value is not the same in every row."""
    keys = sorted({k for r in rows for k in r["params"]})
    out = []
    for key in keys:
        if key in FIXED or key.startswith(IGNORED):
            continue
        values = {json.dumps(r["params"].get(key), sort_keys=True) for r in rows}
        if len(values) > 1:
            out.append(key)
    return out


def fold_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Experiments grouped by every param but ``fold`` (seed included); for each group of two or more folds with
    CV, the folds, their mean CV and its standard deviation (sample, n - 1)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["cv"] is None:
            continue
        rest = {k: v for k, v in r["params"].items() if k != "fold" and not k.startswith(IGNORED)}
        groups[json.dumps(rest, sort_keys=True)].append(r)
    out = []
    for members in groups.values():
        by_fold = {r["params"].get("fold"): r for r in members}  # the same fold twice (workspace = commit): once
        if len(by_fold) < 2:
            continue
        cvs = [r["cv"] for r in by_fold.values()]
        mean = sum(cvs) / len(cvs)
        std = math.sqrt(sum((c - mean) ** 2 for c in cvs) / (len(cvs) - 1))
        out.append(
            {
                "experiments": ", ".join(r["name"] for r in by_fold.values()),
                "folds": ",".join(str(f) for f in sorted(by_fold)),
                "cv_mean": mean,
                "cv_std": std,
            }
        )
    return out


def _fmt(value: Any) -> str:
    """A param as written (lists as JSON), ``-`` when absent."""
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = [header, ["-" * w for w in widths], *body]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def render(rows: list[dict[str, Any]]) -> str:
    """The experiments table and, when there are fold experiments, the fold summary."""
    if not rows:
        return "no experiments with params found (run `dvc exp run` first)"
    extra = differing(rows)
    header = ["experiment", "fold", "seed", *extra, "CV MAP@5", "LB MAP@5", "CV known", "CV new"]
    body = [
        [
            r["name"],
            _fmt(r["params"].get("fold")),
            _fmt(r["params"].get("train.seed")),
            *(_fmt(r["params"].get(k)) for k in extra),
            _score(r["cv"]),
            _score(r["lb"]),
            _score(r["known"]),
            _score(r["new"]),
        ]
        for r in rows
    ]
    text = table(header, body)
    folds = fold_summary(rows)
    if folds:
        text += "\n\nCV over folds (experiments that differ only by fold):\n" + table(
            ["experiments", "folds", "CV MAP@5 mean ± std"],
            [[f["experiments"], f["folds"], f"{f['cv_mean']:.4f} ± {f['cv_std']:.4f}"] for f in folds],
        )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whaleid exps", description=__doc__.splitlines()[0])
    parser.add_argument("--all-commits", "-A", action="store_true", help="experiments of every commit")
    parser.add_argument("--json-file", help="read this `dvc exp show --json` output instead of running DVC")
    args = parser.parse_args(argv)
    if args.json_file:
        with open(args.json_file) as f:
            tree = json.load(f)
    else:
        cmd = ["dvc", "exp", "show", "--json", *(["-A"] if args.all_commits else [])]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stderr)
            return done.returncode
        tree = json.loads(done.stdout)
    print(render(collect(tree)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
