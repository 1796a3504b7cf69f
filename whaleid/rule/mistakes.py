"""Out-of-fold predictions, one row per validation photo, to look at what the rule got wrong: the truth (or
new_individual when the individual is absent from the gallery), the five predictions with the candidates'
scores, the rank of the hit, and MAP@5 per species. Written by stage threshold as metrics/oof_predictions.csv."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from whaleid.data.layout import NEW_INDIVIDUAL
from whaleid.retrieval.neighbours import Neighbours
from whaleid.rule.candidates import NEW, NONE
from whaleid.rule.predict import Rule, query_truth, ranked


def oof_predictions(
    parts: Mapping[str, Neighbours],
    rule: Rule,
    classes: Sequence[str],
    species: Mapping[str, str],
    class_species: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per validation query of every part (named by its validation set): image, validation, species (of
    the photo), truth, in_gallery, predictions (as submission.csv), candidates (``id:score`` best first, the
    scores the rule compared with its threshold), hit_rank (1-5, 0 for a miss) and ap5 (1 / hit_rank, 0)."""
    names = np.asarray([*classes, NEW_INDIVIDUAL, ""], dtype=object)

    def name(c: int) -> str:
        return str(names[len(classes) if c == NEW else len(classes) + 1 if c == NONE else c])

    frames = []
    for part, nn in parts.items():
        pred, labels, scores, _ = ranked(rule, nn, class_species)
        truth = query_truth(nn.query_labels, nn.gallery_labels)
        hit = pred == truth[:, None]
        rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
        frames.append(
            pd.DataFrame(
                {
                    "image": nn.query_images,
                    "validation": part,
                    "species": [species.get(str(i), "") for i in nn.query_images],
                    "truth": [name(int(t)) for t in truth],
                    "in_gallery": truth != NEW,
                    "predictions": [" ".join(name(int(c)) for c in row if c != NONE) for row in pred],
                    "candidates": [
                        " ".join(f"{name(int(c))}:{s:.4f}" for c, s in zip(lr, sr, strict=True) if np.isfinite(s))
                        for lr, sr in zip(labels, scores, strict=True)
                    ],
                    "hit_rank": rank,
                    "ap5": np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0).round(6),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def per_species_map5(oof: pd.DataFrame) -> dict[str, dict]:
    """MAP@5 (unweighted: every validation photo counts once) and photo count per species, best first."""
    grouped = oof.groupby("species")["ap5"].agg(["mean", "size"]).sort_values("mean", ascending=False)
    return {str(s): {"map5": round(float(r["mean"]), 6), "photos": int(r["size"])} for s, r in grouped.iterrows()}
