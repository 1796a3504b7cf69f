"""MAP@5 as Kaggle scores it: each image's score is 1/rank of its true label in its five predictions (0 if
absent; only the first occurrence counts), averaged over images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from whaleid.retrieval.neighbours import Neighbours


def precision_at_5(predictions: Sequence[str], truth: str) -> float:
    """Score of one image: ``1 / (rank + 1)`` of ``truth`` among the first five predictions, else 0."""
    for rank, label in enumerate(list(predictions)[:5]):
        if label == truth:
            return 1.0 / (rank + 1)
    return 0.0


def map_at_5(predictions: Sequence[Sequence[str]], truths: Sequence[str]) -> float:
    """Mean of :func:`precision_at_5` over images."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} truths")
    if not truths:
        raise ValueError("no images to score")
    return float(np.mean([precision_at_5(p, t) for p, t in zip(predictions, truths, strict=True)]))


def retrieval_metrics(
    sims: np.ndarray, gallery_rows: np.ndarray, gallery_labels: np.ndarray, query_labels: np.ndarray
) -> dict[str, float | int | None]:
    """Image-retrieval metrics of a kNN result over the queries whose individual the gallery shows (known ones).

    Rows are ranked by descending score (``gallery_rows`` -1 = empty slot). For a query with ``G`` gallery photos of
    its individual and correct photos at ranks ``r_1 < r_2 < ...`` (1-based) within the top-k:

    * ``recall_at_1`` / ``recall_at_5``: a correct photo is ranked first / among the first five (CMC);
    * ``map``: average precision ``sum_i (i / r_i) / G`` (a correct photo beyond the top-k counts as missed);
    * ``minp``: mean inverse negative penalty ``G / r_G`` (Ye et al. 2021), 0 when some correct photo lies beyond
      the top-k.

    Exact when ``k`` covers the gallery; with ``k`` smaller they are lower bounds (of recall, mAP and mINP alike).
    """
    sims = np.asarray(sims, dtype=np.float64)
    gallery_rows = np.asarray(gallery_rows)
    gallery_labels = np.asarray(gallery_labels)
    query_labels = np.asarray(query_labels)
    order = np.argsort(-sims, axis=1, kind="stable")
    gallery_rows = np.take_along_axis(gallery_rows, order, 1)
    counts = dict(zip(*np.unique(gallery_labels, return_counts=True), strict=True))
    n_rel = np.array([counts.get(q, 0) for q in query_labels.tolist()])
    known = n_rel > 0
    if not known.any():
        return {"recall_at_1": None, "recall_at_5": None, "map": None, "minp": None, "queries": 0}
    hit = (gallery_rows >= 0) & (gallery_labels[np.clip(gallery_rows, 0, None)] == query_labels[:, None])
    hit, n_rel = hit[known], n_rel[known]
    ranks = np.arange(1, hit.shape[1] + 1)
    found = np.cumsum(hit, axis=1)
    ap = (hit * found / ranks).sum(axis=1) / n_rel
    last = np.where(hit, ranks, 0).max(axis=1)
    inp = np.where(found[:, -1] == n_rel, n_rel / np.maximum(last, 1), 0.0)
    return {
        "recall_at_1": round(float(hit[:, :1].any(axis=1).mean()), 6),
        "recall_at_5": round(float(hit[:, :5].any(axis=1).mean()), 6),
        "map": round(float(ap.mean()), 6),
        "minp": round(float(inp.mean()), 6),
        "queries": int(known.sum()),
    }


def pooled_retrieval_metrics(parts: Sequence[Neighbours]) -> dict[str, float | int | None]:
    """:func:`retrieval_metrics` over several validation kNN results (e.g. one per fold model), averaged with each
    part weighted by its known queries."""
    results = [retrieval_metrics(p.sims, p.rows, p.gallery_labels, p.query_labels) for p in parts]
    n = sum(r["queries"] for r in results)
    if n == 0:
        return (
            results[0] if results else retrieval_metrics(np.zeros((0, 1)), np.zeros((0, 1)), np.zeros(0), np.zeros(0))
        )
    out: dict[str, float | int | None] = {"queries": n}
    for key in ("recall_at_1", "recall_at_5", "map", "minp"):
        out[key] = round(sum(r[key] * r["queries"] for r in results if r["queries"]) / n, 6)
    return out


def shortlist_recall(parts: Sequence[Neighbours], ks: Sequence[int]) -> dict[str, float | int | None]:
    """The share of known validation queries (their individual is in the gallery) whose individual is among their
    first ``k`` candidates, for each ``k`` (``recall_at_<k>``), pooled over ``parts``: the ceiling a re-ranking of
    the first ``k`` (local-feature fusion) can reach."""
    hits = {k: 0 for k in ks}
    n = 0
    for nn in parts:
        known = np.isin(np.asarray(nn.query_labels), np.asarray(nn.gallery_labels))
        same = nn.same_individual()[known]
        n += int(known.sum())
        for k in ks:
            hits[k] += int(same[:, :k].any(axis=1).sum())
    return {"queries": n, **{f"recall_at_{k}": round(hits[k] / n, 6) if n else None for k in ks}}


def split_cv_metrics(fit: dict, retrieval: dict, shortlist: dict, species: dict[str, dict]) -> tuple[dict, dict]:
    """cv.json (what `dvc metrics show` tabulates: MAP@5 all/known/new, threshold, shares, folds, MAP@5 per species)
    and cv_details.json (the rest: retrieval and shortlist figures, photos per species, MAP@5 unweighted, the
    number of validation photos), from the fitted rule's metrics ``fit`` and the others."""
    cv = {k: v for k, v in fit.items() if k not in ("map5_unweighted", "valid_images")}
    cv["species"] = {s: v["map5"] for s, v in species.items()}
    details = {
        "map5_unweighted": fit.get("map5_unweighted"),
        "valid_images": fit.get("valid_images"),
        "retrieval": retrieval,
        "shortlist": shortlist,
        "species": species,
    }
    return cv, details
