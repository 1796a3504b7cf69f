"""The match report: one static, self-contained HTML page (``reports/matches.html``) to look at instead of reading
metrics. For a seeded sample of validation queries, and for the worst failures, a row shows the query thumbnail,
the five predictions as the rule makes them (``new_individual`` where the threshold puts it), each individual with
the thumbnail of its best-matching gallery photo and its score, marked correct or wrong, and the threshold.
Thumbnails are inlined as JPEG data URIs, so the file opens anywhere (a browser, a CI artifact, an e-mail).
:func:`contact_sheet` draws the same rows as one image (``reports/matches.jpg``), which ``dvc plots show`` lists.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from whaleid.data.layout import NEW_INDIVIDUAL
from whaleid.retrieval.neighbours import Neighbours
from whaleid.rule.candidates import NEW, candidates
from whaleid.rule.predict import Rule, apply_rule, query_truth


def thumbnail(image: np.ndarray, size: int = 96) -> str:
    """An RGB uint8 image as a JPEG data URI, longer side ``size``."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def best_photo(sims: np.ndarray, gallery_rows: np.ndarray, gallery_labels: np.ndarray, label: int) -> int:
    """The query's best-scoring neighbour row showing individual ``label``; -1 if none of its neighbours does."""
    rows = np.flatnonzero((gallery_rows >= 0) & (gallery_labels[np.clip(gallery_rows, 0, None)] == label))
    return int(gallery_rows[rows[np.argmax(sims[rows])]]) if len(rows) else -1


def precision_at_5(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(Q,) MAP@5 of each query: 1 / (rank of the truth) when it is among the five, else 0."""
    hit = pred == truth[:, None]
    return np.where(hit.any(axis=1), 1.0 / (hit.argmax(axis=1) + 1), 0.0)


def choose_queries(score: np.ndarray, top: np.ndarray, n_sample: int, n_worst: int, seed: int) -> tuple[list, list]:
    """A seeded random sample of queries, and the worst: missed queries (score 0), most confident first."""
    rng = np.random.default_rng(seed)
    sample = sorted(rng.choice(len(score), size=min(n_sample, len(score)), replace=False).tolist())
    missed = np.flatnonzero(score == 0)
    worst = missed[np.argsort(-top[missed], kind="stable")][:n_worst].tolist()
    return sample, worst


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}
td{padding:4px;text-align:center;vertical-align:top;font-size:12px}img{display:block;margin:auto;width:96px}
.query{background:#eef}.ok{outline:4px solid #2a2}.bad{outline:4px solid #c22}.new{color:#777;width:96px;height:96px;
display:flex;align-items:center;justify-content:center;border:1px dashed #999;margin:auto}h2{margin-top:1.5em}"""


def render(title: str, summary: str, sections: Sequence[tuple[str, list[dict]]]) -> str:
    """The page. Each section is (heading, rows); a row is {query, query_image, truth, score, cells}, a cell
    {name, image (RGB uint8, or None for new_individual or no photo), score, correct}."""
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>",
    ]
    for heading, rows in sections:
        out.append(f"<h2>{html.escape(heading)}</h2><table>")
        for r in rows:
            out.append(
                f"<tr class='match' data-query='{html.escape(r['query'])}' data-map5='{r['score']:.3f}'>"
                f"<td class='query'><img src='{thumbnail(r['query_image'])}' alt='query'>{html.escape(r['query'])}<br>"
                f"truth: {html.escape(r['truth'])}<br>MAP@5 {r['score']:.2f}</td>"
            )
            for c in r["cells"]:
                mark = "ok" if c["correct"] else "bad"
                pic = (
                    f"<img class='{mark}' src='{thumbnail(c['image'])}' alt='{html.escape(c['name'])}'>"
                    if c["image"] is not None
                    else f"<div class='new {mark}'>new</div>"
                )
                score = "" if c["score"] is None else f"<br>{c['score']:.3f}"
                out.append(
                    f"<td class='candidate {mark}'>{pic}<span class='name'>{html.escape(c['name'])}</span>{score}</td>"
                )
            out.append("</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def match_sections(
    nn: Neighbours,
    rule: Rule,
    classes: Sequence[str],
    *,
    class_species: np.ndarray | None,
    load_query: Callable[[str], np.ndarray],
    load_gallery: Callable[[str], np.ndarray],
    n_sample: int = 24,
    n_worst: int = 12,
    seed: int = 0,
) -> tuple[str, list[tuple[str, list[dict]]]]:
    """The report's summary line and sections (see :func:`render`) for validation neighbours ``nn`` (with their
    query and gallery images and the queries' labels), predicted by ``rule``; ``load_*`` read a photo by name as RGB
    uint8."""
    sims, rows, g_labels = nn.sims, nn.rows, np.asarray(nn.gallery_labels)
    pred = apply_rule(rule, nn, class_species)
    cand_labels, cand_scores = candidates(sims, rows, g_labels, rule.scoring, rule.vote_power)
    truth = query_truth(nn.query_labels, g_labels)
    score = precision_at_5(pred, truth)
    names = [*classes]
    sample, worst = choose_queries(score, cand_scores[:, 0], n_sample, n_worst, seed)

    def row(q: int) -> dict:
        cells = []
        score_of = dict(zip(cand_labels[q].tolist(), cand_scores[q].tolist(), strict=True))
        for label in pred[q]:
            if label == NEW:
                cells.append({"name": NEW_INDIVIDUAL, "image": None, "score": None, "correct": bool(truth[q] == NEW)})
                continue
            photo = best_photo(sims[q], rows[q], g_labels, int(label))
            image = load_gallery(str(nn.gallery_images[photo])) if photo >= 0 else None
            s = score_of.get(int(label))
            cells.append(
                {
                    "name": names[label],
                    "image": image,
                    "score": None if s is None or not np.isfinite(s) else s,
                    "correct": bool(truth[q] == label),
                }
            )
        return {
            "query": str(nn.query_images[q]),
            "query_image": load_query(str(nn.query_images[q])),
            "truth": NEW_INDIVIDUAL if truth[q] == NEW else names[truth[q]],
            "score": float(score[q]),
            "cells": cells,
        }

    summary = (
        f"{len(score)} validation queries, MAP@5 {score.mean():.4f} (unweighted); rule {rule.method}, "
        f"threshold {rule.threshold:.3f} ({rule.scoring} scoring): new_individual goes before the first "
        f"candidate scoring below it. Green: correct, red: wrong."
    )
    return summary, [
        (f"A random sample of {len(sample)} queries", [row(q) for q in sample]),
        (f"The {len(worst)} worst: missed queries, most confident first", [row(q) for q in worst]),
    ]


def match_report(
    nn: Neighbours,
    rule: Rule,
    classes: Sequence[str],
    *,
    class_species: np.ndarray | None,
    load_query: Callable[[str], np.ndarray],
    load_gallery: Callable[[str], np.ndarray],
    n_sample: int = 24,
    n_worst: int = 12,
    seed: int = 0,
    title: str = "whaleid matches",
) -> str:
    """The report page (:func:`match_sections` rendered by :func:`render`)."""
    summary, sections = match_sections(
        nn,
        rule,
        classes,
        class_species=class_species,
        load_query=load_query,
        load_gallery=load_gallery,
        n_sample=n_sample,
        n_worst=n_worst,
        seed=seed,
    )
    return render(title, summary, sections)


GREEN, RED, BLUE, GREY = (40, 170, 40), (200, 30, 30), (70, 90, 200), (150, 150, 150)


def _tile(
    image: np.ndarray | None, colour: tuple[int, int, int], caption: str, size: int, empty: str = "new"
) -> np.ndarray:
    """One cell of the contact sheet: the image fitted in a ``size`` square inside a coloured border, with a caption
    strip below (no image: a grey square reading ``empty``)."""
    border, strip = 4, 14
    tile = np.full((size + 2 * border + strip, size + 2 * border, 3), 255, np.uint8)
    tile[: size + 2 * border] = colour
    inner = np.full((size, size, 3), 235, np.uint8)
    if image is not None:
        h, w = image.shape[:2]
        scale = size / max(h, w)
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        top, left = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
        inner[top : top + small.shape[0], left : left + small.shape[1]] = small
    else:
        cv2.putText(inner, empty, (size // 2 - 14, size // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, GREY, 1)
    tile[border : border + size, border : border + size] = inner
    cv2.putText(tile, caption[:14], (2, size + 2 * border + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (20, 20, 20), 1)
    return tile


def contact_sheet(sections: Sequence[tuple[str, list[dict]]], size: int = 64) -> np.ndarray:
    """The sections as one RGB image: a heading strip per section, then a row per query (the query with a blue
    border, then its five predictions, green when correct and red when wrong, captioned with their scores)."""
    rows = []
    width = 6 * (size + 8)
    for heading, section in sections:
        bar = np.full((22, width, 3), 255, np.uint8)
        cv2.putText(bar, heading[:90], (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        rows.append(bar)
        for r in section:
            tiles = [_tile(r["query_image"], BLUE, f"MAP@5 {r['score']:.2f}", size)]
            for c in r["cells"]:
                new = c["name"] == NEW_INDIVIDUAL
                caption = "new_individual" if new else ("-" if c["score"] is None else f"{c['score']:.3f}")
                tiles.append(_tile(c["image"], GREEN if c["correct"] else RED, caption, size, "new" if new else "?"))
            line = np.full((tiles[0].shape[0], width, 3), 255, np.uint8)
            joined = np.concatenate(tiles, axis=1)
            line[:, : joined.shape[1]] = joined
            rows.append(line)
    return np.concatenate(rows, axis=0) if rows else np.full((1, width, 3), 255, np.uint8)
