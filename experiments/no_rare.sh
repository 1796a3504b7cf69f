#!/usr/bin/env bash
# Data where no individual is rare (every one seen 6+ times, as in camera-trap, zoo or farm sets), so the natural
# 5-fold split has no new individuals in validation. Compares, on the same generated data and training seeds:
#   before  the code before held-out individuals (commit db5d521): the sweep silently picks threshold 0
#   share   this code with cv.min_new_share 0: no held-out individuals, the rule falls back to the share method
#   split   this code's default (cv.min_new_share 0.16): whole individuals held out of each fold's training
#   splitfull  split, but the submission embeds with a `full` member trained on every image (CONFIGS=splitfull)
# Each run is a full `dvc repro` in its own git worktree under $WORK (default /tmp/whaleid-norare); the table is
# printed at the end. About 3 minutes per run on 2 cores: SEEDS="42 43" CONFIGS="before share split" -> ~20 min.
# DATA=/path/to/kaggle-layout-set (with solution.csv) runs the same on another dataset, e.g. a real one made by
# bench/folders_to_kaggle.py; BOXES=path/to/boxes.csv crops to boxes (default: the generated set's, none for DATA).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/whaleid-norare}
SEEDS=${SEEDS:-"42 43"}
CONFIGS=${CONFIGS:-"before share split"}
BEFORE=db5d521
DATA=${DATA:-$WORK/data}
BOXES=${BOXES:-}
mkdir -p "$WORK"
if [[ ! -f $DATA/train.csv && $DATA == "$WORK/data" ]]; then
  python -c "
from whaleid.config import SampleConfig
from whaleid.sample import write_dataset
write_dataset(SampleConfig(min_images_per_id=6), '$DATA')"
fi
[[ $DATA == "$WORK/data" ]] && BOXES=$DATA/boxes.csv
for seed in $SEEDS; do
  for cfg in $CONFIGS; do
    dir=$WORK/$cfg-$seed
    [[ -f $dir/.done ]] && continue  # (metrics/*.json are tracked, so a fresh worktree already has them)
    rev=HEAD
    [[ $cfg == before ]] && rev=$BEFORE
    rm -rf "$dir"
    git -C "$ROOT" worktree prune
    git -C "$ROOT" worktree add -q --detach "$dir" "$rev"
    min_new=0.16
    [[ $cfg == share ]] && min_new=0.0
    (cd "$dir" && python - "$DATA" "$seed" "$cfg" "$min_new" "$BOXES" <<'PY'
import sys, yaml
data, seed, cfg, min_new, boxes = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
p = yaml.safe_load(open("params.yaml"))
p["data"]["dir"] = data
p["crop"]["boxes"] = boxes or None
p["train"]["seed"] = seed
if cfg != "before":
    p["cv"]["min_new_share"] = min_new
    p["local"]["method"] = "none"  # the code before had no local features: compare the split alone
if cfg == "splitfull":  # threshold from the held-out split's CV, submission from a model trained on every image
    p["ensemble"] = {"members": ["full"], "fold_model": False}
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
    )
    (cd "$dir" && PYTHONPATH=$dir dvc repro -q > repro.log 2>&1) || { tail -20 "$dir/repro.log"; exit 1; }
    touch "$dir/.done"
  done
done
python - "$WORK" "$SEEDS" "$CONFIGS" "$DATA" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
work, seeds, configs = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
sol = pd.read_csv(Path(sys.argv[4]) / "solution.csv")
true_new = (sol["individual_id"] == "new_individual").mean()
print(f"test images showing new individuals: {true_new:.1%}")
print("| config | seed | CV MAP@5 | validation new share | rule | threshold | test new_individual first | LB MAP@5 | pixel kNN LB |")
print("|---|---|---|---|---|---|---|---|---|")
for cfg in configs:
    for seed in seeds:
        d = work / f"{cfg}-{seed}"
        cv, lb = json.loads((d / "metrics/cv.json").read_text()), json.loads((d / "metrics/lb.json").read_text())
        sub = pd.read_csv(d / "submissions/submission.csv")
        first_new = sub["predictions"].str.startswith("new_individual").mean()
        base = json.loads((d / "metrics/baseline.json").read_text())
        print(f"| {cfg} | {seed} | {cv['map5']:.4f} | {cv['valid_new_share']:.1%} | {cv['method']} | "
              f"{cv['threshold']:.3f} | {first_new:.1%} | {lb['map5']:.4f} | {base['pixel_knn_map5']:.4f} |")
PY
