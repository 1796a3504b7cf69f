"""Pseudo-label rounds: the most confident test predictions of known individuals join the training set of the
next round's model (the largest late gain of the Happywhale winners).

One round, for the ``fold`` model (validation fold ``f``):

1. its test photos are searched against **its own training gallery** (every fold but ``f``, less the individuals
   held out of it), scored exactly like the submission (kNN, blend, local-feature fusion) and put through the rule
   fitted on fold ``f``. Validation photos are never pseudo-labelled, and no pseudo-label comes from a fold-``f``
   photo or names an individual only fold ``f`` shows, so fold ``f``'s CV stays out of sample in every round;
2. :func:`select_confident` keeps the photos whose first prediction is a known individual (new_individual not
   first), at most ``pseudo.max_share`` of the test photos, the highest top-1 scores first, with the top-1 score
   ahead of the second candidate by ``pseudo.min_margin``;
3. the next model trains from scratch (same seed and params) on the training folds plus those photos with their
   predicted individual. Confident new_individual predictions are not turned into new classes: one photo of an
   unknown animal gives the head nothing to generalise from, and a wrong merge of two new animals costs twice.

Each round is evaluated like the submission: CV on fold ``f`` (rule refitted), LB against solution.csv when the
dataset has one, and the accuracy of the pseudo-labels themselves when solution.csv can tell.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whaleid.config import Params, runtime_of
from whaleid.core.atomic import load_npz, write_csv
from whaleid.core.device import select_device
from whaleid.data.folds import training_rows
from whaleid.data.layout import load_dataset
from whaleid.model.network import load_model
from whaleid.pipeline.artifacts import (
    check_resized,
    class_species,
    folds_with_labels,
    held_out,
    resized_paths,
)
from whaleid.pipeline.embedding import embed_dataset
from whaleid.pipeline.members import fingerprint, train_member, training_code
from whaleid.pipeline.paths import FOLDS, LABELS, PSEUDO_CACHE, RESIZED_DIR, WEIGHTS_ID, embed_dir
from whaleid.pipeline.prepare import load_keypoints
from whaleid.pipeline.scoring import validation_photos
from whaleid.retrieval.blend import Centres
from whaleid.retrieval.chain import Photos, ScoringChain
from whaleid.retrieval.keypoints import KeypointSet
from whaleid.retrieval.neighbours import Neighbours
from whaleid.rule.candidates import NEW, candidates
from whaleid.rule.predict import RuleFit, apply_rule, fit_rule
from whaleid.rule.submission import build_submission, labels_to_strings, score_submission

log = logging.getLogger(__name__)


def select_confident(
    first: np.ndarray, labels: np.ndarray, scores: np.ndarray, max_share: float, min_margin: float = 0.0
) -> np.ndarray:
    """Rows to pseudo-label, most confident first.

    Args:
        first: (Q,) the rule's first prediction per test photo (:data:`whaleid.rule.predict.NEW` for new_individual).
        labels, scores: (Q, 5) candidates and their scores (the rule's scoring).
        max_share: at most ``floor(max_share * Q)`` rows.
        min_margin: required ``scores[:, 0] - scores[:, 1]``.
    """
    first, labels, scores = np.asarray(first), np.asarray(labels), np.asarray(scores, dtype=np.float64)
    margin = scores[:, 0] - np.where(np.isfinite(scores[:, 1]), scores[:, 1], -np.inf)
    ok = (first != NEW) & (first == labels[:, 0]) & np.isfinite(scores[:, 0]) & (margin >= min_margin)
    rows = np.flatnonzero(ok)
    rows = rows[np.argsort(-scores[rows, 0], kind="stable")]
    return rows[: int(np.floor(max_share * len(first)))]


@dataclass(frozen=True)
class Evaluation:
    """One model's results, scored like the submission: the fused validation and test neighbours, the rule
    fitted on validation, the LB MAP@5 (None without solution.csv) and the selection search's neighbours (test
    photos against the model's training gallery)."""

    valid: Neighbours
    test: Neighbours
    fit: RuleFit
    lb: float | None
    select: Neighbours


def evaluate_model(
    params: Params,
    name: str,
    fold: int,
    *,
    train: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    centres: Centres,
    keypoints: tuple[dict[str, KeypointSet], dict[str, KeypointSet], dict[str, KeypointSet]] | None,
    class_species: np.ndarray,
    classes: list[str],
    solution: pd.DataFrame | None,
) -> Evaluation:
    """Score one model's embeddings ``train`` (folds.csv order, arrays ``embeddings``, ``images``, ``labels``,
    ``folds``, ``held``) and ``test`` through the scoring chain, fit the rule and score the submission it gives."""
    everyone = Photos.of(train, [train["embeddings"]])
    query, own_gallery = validation_photos(train, fold)
    tests = Photos.of(test, [test["embeddings"]])
    chain = ScoringChain(params.knn, params.blend, params.local, run=runtime_of(params))
    valid_nn = chain.neighbours(query, own_gallery, centres=[centres])
    test_nn = chain.neighbours(tests, everyone, centres=[centres])
    select_nn = chain.neighbours(tests, own_gallery, centres=[centres])
    train_kp, test_kp, query_kp = keypoints if keypoints is not None else (None, None, None)
    fusion = chain.fit_fusion({name: valid_nn}, train_kp, query_kp)
    valid_nn = fusion.valid[name]
    test_nn = chain.fuse(test_nn, fusion.calibration, test_kp, train_kp, "match test")
    select_nn = chain.fuse(select_nn, fusion.calibration, test_kp, train_kp, "match test (own gallery)")
    fit = fit_rule(
        [valid_nn], params.threshold, params.cv.new_ratio, class_species=class_species, names=[name], warn=False
    )
    lb = None
    if solution is not None:
        pred = apply_rule(fit.rule, test_nn, class_species)
        frame = build_submission(list(test["images"]), labels_to_strings(pred, classes))
        lb = round(score_submission(frame, solution), 6)
    return Evaluation(valid_nn, test_nn, fit, lb, select_nn)


def pseudo_labels(ev: Evaluation, params: Params, class_species: np.ndarray) -> pd.DataFrame:
    """The test photos :func:`select_confident` picks from ``ev``'s own-gallery search, with the predicted class
    and its score: columns ``image``, ``label``, ``score``."""
    nn = ev.select
    rule = ev.fit.rule
    labels, scores = candidates(nn.sims, nn.rows, nn.gallery_labels, rule.scoring, rule.vote_power)
    first = apply_rule(rule, nn, class_species)[:, 0]
    rows = select_confident(first, labels, scores, params.pseudo.max_share, params.pseudo.min_margin)
    return pd.DataFrame(
        {
            "image": np.asarray(ev.select.query_images)[rows].astype(str),
            "label": labels[rows, 0].astype(np.int64),
            "score": np.round(scores[rows, 0].astype(np.float64), 6),
        }
    )


def _train_round(params: Params, name: str, r: int, extra: pd.DataFrame) -> Path:
    """The round-``r`` model (trained, or reused from PSEUDO_CACHE under the same fingerprint)."""
    fp = fingerprint(
        params,
        [FOLDS, LABELS, RESIZED_DIR / "info.json", WEIGHTS_ID, *training_code()],
        [f"{p}={label}" for p, label in zip(extra["path"], extra["label"], strict=True)] + [str(r)],
    )
    cached = PSEUDO_CACHE / f"{name}-round{r}-{fp}"
    if not (cached / "model.pt").is_file():
        work = PSEUDO_CACHE / f"{name}-round{r}.work"
        shutil.rmtree(work, ignore_errors=True)
        train_member(params, f"{name}-pseudo{r}", extra=extra, fold=params.fold, out_dir=work)
        for old in PSEUDO_CACHE.glob(f"{name}-round{r}-*"):
            shutil.rmtree(old, ignore_errors=True)
        work.rename(cached)
    else:
        log.info("round %d: reusing the model trained before (%s)", r, cached)
    return cached


def run_rounds(params: Params, out: Path) -> tuple[Evaluation, list[dict]]:
    """Round 0 (the ``fold`` model as the pipeline trained it) and ``pseudo.rounds`` pseudo-label rounds; writes
    ``out``/round<r>/ (model.pt, live/, pseudo_labels.csv) and returns the last round's evaluation and the
    per-round history (CV and LB MAP@5, pseudo-labels and their accuracy)."""
    cfg = params.pseudo
    ds = load_dataset(params.data.dir)
    check_resized(params)
    folds, classes = folds_with_labels()
    species = class_species(folds, len(classes))
    label_species = folds.groupby("label")["species_label"].agg(lambda s: s.mode().iloc[0])
    name, fold = f"fold{params.fold}", params.fold
    keypoints = None
    if params.local.methods:
        keypoints = tuple(load_keypoints(split, params.local) for split in ("train", "test", "query"))
    train = load_npz(embed_dir(name) / "train.npz")
    test = load_npz(embed_dir(name) / "test.npz")
    centres = Centres.from_arrays(load_npz(embed_dir(name) / "centres.npz"))
    truth = None
    if ds.solution is not None:
        truth = ds.solution.set_index("image")["individual_id"]
    own_labels = folds["label"].to_numpy()[training_rows(folds["fold"].to_numpy(), held_out(folds), fold)]
    device = select_device(params.runtime.device)

    def run(train: dict, test: dict, centres: Centres):
        return evaluate_model(
            params,
            name,
            fold,
            train=train,
            test=test,
            centres=centres,
            keypoints=keypoints,
            class_species=species,
            classes=classes,
            solution=ds.solution,
        )

    ev = run(train, test, centres)
    history = [{"round": 0, "cv_map5": ev.fit.metrics["map5"], "lb_map5": ev.lb, "pseudo_labels": 0}]
    log.info("round 0 (%s as trained): CV MAP@5 %.4f, LB %s", name, ev.fit.metrics["map5"], ev.lb)
    for r in range(1, cfg.rounds + 1):
        chosen = pseudo_labels(ev, params, species)
        chosen["individual_id"] = [classes[c] for c in chosen["label"]]
        row = {"round": r, "pseudo_labels": len(chosen)}
        if truth is not None:
            chosen["correct"] = chosen["individual_id"].to_numpy() == truth.loc[chosen["image"]].to_numpy()
            row["pseudo_accuracy"] = round(float(chosen["correct"].mean()), 6) if len(chosen) else None
        (out / f"round{r}").mkdir()
        write_csv(out / f"round{r}" / "pseudo_labels.csv", chosen.drop(columns="label"))
        extra = pd.DataFrame(
            {
                "path": [str(p) for p in resized_paths("test_images", chosen["image"], params.resize.format)],
                "label": chosen["label"].to_numpy(np.int64),
                "species_label": label_species.loc[chosen["label"]].to_numpy(np.int64),
            }
        )
        model_dir = _train_round(params, name, r, extra)
        shutil.copytree(model_dir, out / f"round{r}", dirs_exist_ok=True)
        model, payload = load_model(model_dir / "model.pt", device)
        emb_train, emb_test, emb_queries = embed_dataset(
            model,
            params,
            train["images"],
            test_images=test["images"],
            device=device,
            name=f"{name} round {r}",
            img_size=int(payload["model"]["img_size"]),
        )
        trained = np.bincount(np.concatenate([own_labels, extra["label"].to_numpy()]), minlength=len(classes)) > 0
        round_train = {**train, "embeddings": emb_train}
        if emb_queries is not None:
            round_train["queries"] = emb_queries
        ev = run(round_train, {**test, "embeddings": emb_test}, Centres.of_model(model.head, trained))
        row |= {"cv_map5": ev.fit.metrics["map5"], "lb_map5": ev.lb}
        history.append(row)
        log.info(
            "round %d: %d pseudo-labels%s -> CV MAP@5 %.4f, LB %s",
            r,
            len(chosen),
            f" ({row['pseudo_accuracy']:.1%} correct)" if row.get("pseudo_accuracy") is not None else "",
            row["cv_map5"],
            row["lb_map5"],
        )
    return ev, history
