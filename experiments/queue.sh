#!/usr/bin/env bash
# Queue the issue-6 ablation: the starter-equivalent config, then each technique added alone on top of
# "starter + augmentation" (the base), two training seeds each. Run them with `dvc exp run --run-all`, then
# `python experiments/table.py` writes experiments/RESULTS.md from `dvc exp show --json`.
set -euo pipefail
# The rows were measured when the default was the base (no crops) with per-image albumentations; crops and
# batched torch augmentation are the default now, so every row starts from -S crop.boxes=null
# -S augment.backend=albumentations to queue the same configs (a later -S of the same key wins). The *torch rows
# measure the same base and base + crops with augment.backend torch (croptorch is the current default).
BASE=(-S crop.boxes=null -S augment.backend=albumentations)
STARTER=(-S augment.affine=0 -S augment.color=0 -S augment.blur=0)
declare -A TECH=(
  [aug]=""
  [subcenter]="-S arcface.subcenters=3"
  [dynmargin]="-S arcface.dynamic_margin=true -S arcface.margin=0.2 -S arcface.margin_min=0.1"
  [mwarmup]="-S arcface.margin_warmup_epochs=3"
  [species]="-S arcface.species_weight=0.2"
  [crop]="-S crop.boxes=data/sample/boxes.csv"
  [fliptta]="-S embed.flip_tta=true"
  [vote]="-S threshold.scoring=vote"
  [perspecies]="-S threshold.per_species=true"
  [share]="-S threshold.method=share"
  [ensfold]="-S ensemble.members=[fold1]"
  [fullfit]="-S ensemble.members=[full] -S ensemble.fold_model=false"
  [cropvote]="-S crop.boxes=data/sample/boxes.csv -S threshold.scoring=vote"
  [best]="-S crop.boxes=data/sample/boxes.csv -S threshold.scoring=vote -S arcface.species_weight=0.2"
  [augtorch]="-S augment.backend=torch"
  [croptorch]="-S crop.boxes=data/sample/boxes.csv -S augment.backend=torch"
)
ORDER=(aug subcenter dynmargin mwarmup species crop fliptta vote perspecies share ensfold fullfit cropvote best
       augtorch croptorch)
# Only some rows or other seeds: ONLY="crop croptorch" SEEDS="44 45" bash experiments/queue.sh
read -r -a ORDER <<< "${ONLY:-${ORDER[*]}}"
for seed in ${SEEDS:-42 43}; do
  [[ -z "${ONLY:-}" ]] && dvc exp run --queue -n "starter-s$seed" "${BASE[@]}" "${STARTER[@]}" -S train.seed=$seed
  for name in "${ORDER[@]}"; do
    # shellcheck disable=SC2086
    dvc exp run --queue -n "$name-s$seed" "${BASE[@]}" ${TECH[$name]} -S train.seed=$seed
  done
done
