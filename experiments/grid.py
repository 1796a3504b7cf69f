"""Run named param configs × training seeds, each a full `dvc repro` in its own git worktree, and print a table.

Every run starts from this checkout's HEAD, sets the given params (dotted keys, YAML values, as `dvc exp run -S`),
sets ``train.seed``, and runs ``dvc repro``. A finished run leaves ``.done`` and is skipped when run again, so an
interrupted grid resumes. The table gives, per config, CV and LB MAP@5 (mean of the seeds, ± half the spread),
the share of test images predicted new_individual, and the raw-pixel kNN oracle of the baseline stage.

Usage (one config per ``--config NAME key=value ...``; a config with no keys is the default)::

    python experiments/grid.py --work /tmp/grid-lions --seeds 42 43 \
        --set data.dir=/tmp/lions --set crop.boxes=null \
        --config default --config r96 model.img_size=96

``--set`` applies to every config (the dataset, typically). Runs go one after another (2 cores are busy enough).
With ``--share``, all configs of one seed run in one worktree, one after another: configs that differ only in
stages after training (``blend.*``, ``threshold.*``, ``local.*``) then train once per seed, and DVC reruns only
what changed. Each finished run's figures are kept in ``NAME-sSEED.json`` (resumable too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from whaleid.config import apply_overrides
from whaleid.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def set_key(params: dict, dotted: str, text: str) -> None:
    """Set ``dotted`` (e.g. ``train.seed``) to the YAML value ``text`` in place; an unknown key stops the grid."""
    try:
        params.update(apply_overrides(params, {dotted: yaml.safe_load(text)}))
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None


def parse_pairs(pairs: list[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{pair!r}: expected key=value")
        out.append((key, value))
    return out


def run_one(work: Path, name: str, seed: int, pairs: list[tuple[str, str]]) -> Path:
    run = work / f"{name}-s{seed}"
    if (run / ".done").exists():
        return run
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)
    if run.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(run)], check=False)
        subprocess.run(["rm", "-rf", str(run)], check=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(run), "HEAD"], check=True)
    params = yaml.safe_load((run / "params.yaml").read_text())
    for key, value in [*pairs, ("train.seed", str(seed))]:
        set_key(params, key, value)
    (run / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(run)}
    print(f"[grid] {run.name}: dvc repro", flush=True)
    with open(run / "repro.log", "w") as log:
        done = subprocess.run(["dvc", "repro", "-q"], cwd=run, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.stdout.write((run / "repro.log").read_text()[-3000:])
        raise SystemExit(f"{run}: dvc repro failed (exit {done.returncode})")
    (run / ".done").touch()
    return run


def run_shared(work: Path, name: str, seed: int, pairs: list[tuple[str, str]]) -> dict:
    record = work / f"{name}-s{seed}.json"
    if record.exists():
        return json.loads(record.read_text())
    run = work / f"shared-s{seed}"
    if not run.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(run), "HEAD"], check=True)
    # The worktree's own commit (HEAD of this checkout may have moved on since it was made).
    params = yaml.safe_load(
        subprocess.run(
            ["git", "-C", str(run), "show", "HEAD:params.yaml"], check=True, capture_output=True, text=True
        ).stdout
    )
    for key, value in [*pairs, ("train.seed", str(seed))]:
        set_key(params, key, value)
    (run / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(run)}
    print(f"[grid] {name} in {run.name}: dvc repro", flush=True)
    with open(run / f"repro-{name}.log", "w") as log:
        done = subprocess.run(["dvc", "repro", "-q"], cwd=run, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.stdout.write((run / f"repro-{name}.log").read_text()[-3000:])
        raise SystemExit(f"{run}: dvc repro failed for {name} (exit {done.returncode})")
    result = read_run(run)
    record.write_text(json.dumps(result))
    return result


def read_run(run: Path) -> dict:
    cv = json.loads((run / "metrics/cv.json").read_text())
    details = run / "metrics/cv_details.json"  # retrieval and shortlist figures (in cv.json before commit 8cbf128)
    if details.is_file():
        cv = {**cv, **json.loads(details.read_text())}
    lb = json.loads((run / "metrics/lb.json").read_text())
    base = json.loads((run / "metrics/baseline.json").read_text())
    sub = pd.read_csv(run / "submissions/submission.csv")
    first = sub["predictions"].str.split().str[0]
    shortlist = cv.get("shortlist", {})
    return {
        "cv": cv["map5"],
        "lb": lb["map5"],
        "known": cv.get("map5_known"),
        "recall1": cv.get("retrieval", {}).get("recall_at_1"),
        "shortlist": shortlist.get(f"recall_at_{shortlist.get('pairs')}"),
        "valid_new_first": cv.get("valid_new_first_share"),
        "new_first": (first == "new_individual").mean(),
        "pixel_oracle": base["pixel_knn_oracle_map5"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    ap.add_argument("--set", action="append", default=[], help="key=value applied to every config")
    ap.add_argument("--config", action="append", nargs="+", required=True, metavar="NAME [key=value ...]")
    ap.add_argument("--share", action="store_true", help="one worktree per seed for every config (see above)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    common = parse_pairs(args.set)
    rows = []
    for name, *pairs in args.config:
        for seed in args.seeds:
            pairs_all = common + parse_pairs(pairs)
            if args.share:
                result = run_shared(args.work, name, seed, pairs_all)
            else:
                result = read_run(run_one(args.work, name, seed, pairs_all))
            rows.append({"config": name, "seed": seed, **result})
            print(f"[grid] {name} s{seed}: {rows[-1]}", flush=True)
    table = pd.DataFrame(rows)
    g = table.groupby("config", sort=False)
    summary = pd.DataFrame(
        {
            "seeds": g["seed"].apply(lambda s: ", ".join(map(str, s))),
            "CV MAP@5": g["cv"].mean().map("{:.4f}".format)
            + " ± "
            + (g["cv"].agg(lambda s: (s.max() - s.min()) / 2)).map("{:.4f}".format),
            "LB MAP@5": g["lb"].mean().map("{:.4f}".format)
            + " ± "
            + (g["lb"].agg(lambda s: (s.max() - s.min()) / 2)).map("{:.4f}".format),
            "CV known": g["known"].mean().map("{:.3f}".format),
            "recall@1": g["recall1"].mean().map("{:.3f}".format),
            "shortlist recall": g["shortlist"].mean().map("{:.3f}".format),
            "valid new (1st)": g["valid_new_first"].mean().map("{:.0%}".format),
            "test new (1st)": g["new_first"].mean().map("{:.0%}".format),
            "raw pixels (oracle)": g["pixel_oracle"].mean().map("{:.4f}".format),
        }
    )
    print(summary.to_markdown())
    table.to_csv(args.work / "runs.csv", index=False)


if __name__ == "__main__":
    main()
