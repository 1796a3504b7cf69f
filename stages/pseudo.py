"""DVC stage `pseudo`: pseudo-label rounds (``pseudo.*``, see :mod:`whaleid.pipeline.pseudo`) -> data/rounds/ and
metrics/pseudo.json.

With ``pseudo.rounds: 0`` (the default) it passes data/fused through to data/rounds unchanged. Otherwise round
``r`` = 1..rounds trains ``fold<fold>`` again with round ``r - 1``'s confident test predictions added, and
data/rounds holds the last round's fused validation and test neighbours (what the threshold and submit stages
use), plus per round ``round<r>/model.pt``, its training curves and ``pseudo_labels.csv``. metrics/pseudo.json
gives CV and LB MAP@5 of every round (round 0: the pipeline's own model) and the pseudo-labels' accuracy where
solution.csv can tell. A finished round's model is kept in .whaleid_cache/pseudo/ under its fingerprint, so an
interrupted run resumes at the round it was in.
"""

import shutil

from whaleid.config import Params
from whaleid.core.atomic import atomic_dir, write_json
from whaleid.pipeline.paths import FUSED_DIR, PSEUDO_METRICS, ROUNDS_DIR
from whaleid.pipeline.stage import run_stage


def main(params: Params) -> None:
    if params.pseudo.rounds == 0:
        with atomic_dir(ROUNDS_DIR) as tmp:
            (tmp / "valid").mkdir()
            for f in sorted((FUSED_DIR / "valid").glob("*.npz")):
                shutil.copyfile(f, tmp / "valid" / f.name)
            shutil.copyfile(FUSED_DIR / "test.npz", tmp / "test.npz")
        write_json(PSEUDO_METRICS, {"rounds": 0})
        return
    from whaleid.pipeline.pseudo import run_rounds  # torch and timm: imported only when there are rounds to train

    with atomic_dir(ROUNDS_DIR) as tmp:
        last, history = run_rounds(params, tmp)
        (tmp / "valid").mkdir()
        last.valid.save(tmp / "valid" / f"fold{params.fold}.npz")
        last.test.save(tmp / "test.npz")
    gain = round(history[-1]["cv_map5"] - history[0]["cv_map5"], 6)
    write_json(PSEUDO_METRICS, {"rounds": params.pseudo.rounds, "history": history, "cv_gain": gain})


if __name__ == "__main__":
    run_stage("pseudo", main)
