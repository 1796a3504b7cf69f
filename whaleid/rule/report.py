"""The match report: one static, self-contained HTML page (``reports/matches.html``) to look at instead of reading
metrics. For a seeded sample of validation queries, and for the worst failures, a row shows the query thumbnail,
the five predictions as the rule makes them (``new_individual`` where the threshold puts it), each individual with
the thumbnail of its best-matching gallery photo and its score, marked correct or wrong, and the threshold.
Thumbnails are inlined as JPEG data URIs, so the file opens anywhere (a browser, a CI artifact, an e-mail).
:func:`whaleid.rule.sheet.contact_sheet` draws the same rows as one image (``reports/matches.jpg``), which
``dvc plots show`` lists.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:separate;border-spacing:6px}
td{padding:2px;text-align:center;vertical-align:top;font-size:12px;max-width:112px;overflow-wrap:anywhere}
img{display:block;margin:0 auto 5px;width:96px;box-sizing:border-box;border:4px solid transparent}
.query{background:#eef}img.ok,.new.ok{border-color:#2a2}img.bad,.new.bad{border-color:#c22}
img.truth{border:4px dashed #a3c}td.truth{border-left:2px solid #ccc;padding-left:8px}
.new{color:#777;width:96px;height:96px;box-sizing:border-box;display:flex;align-items:center;justify-content:center;
border:4px solid #ccc;margin:0 auto 5px}.name{display:block;font-weight:600}.note{color:#666}h2{margin-top:1.5em}
.photos img{display:inline-block;margin:4px}"""


GENERATOR = "<meta name='generator' content='whaleid report'>"  # marks a page whaleid wrote (it may replace it)


def _cell(c: dict) -> str:
    """One prediction cell: the picture outlined green or red, the individual's name and score below it."""
    mark = "ok" if c["correct"] else "bad"
    name = html.escape(c["name"])
    pic = (
        f"<img class='{mark}' src='{thumbnail(c['image'])}' alt='{name}'>"
        if c["image"] is not None
        else f"<div class='new {mark}'>{'new' if c['name'] == NEW_INDIVIDUAL else 'no photo'}</div>"
    )
    score = "" if c["score"] is None else f"{c['score']:.3f}"
    return f"<td class='candidate {mark}'>{pic}<span class='name'>{name}</span>{score}</td>"


def _truth_cell(t: dict) -> str:
    """For a miss: the true individual's nearest gallery photo (dashed outline), where the rule ranked it."""
    name = html.escape(t["name"])
    pic = f"<img class='truth' src='{thumbnail(t['image'])}' alt='{name}'>" if t["image"] is not None else ""
    return f"<td class='truth'>{pic}<span class='name'>truth: {name}</span><span class='note'>{html.escape(t['note'])}</span></td>"


def render(
    title: str,
    summary: str,
    sections: Sequence[tuple[str, list[dict]]],
    photos: tuple[str, list[tuple[str, np.ndarray]]] | None = None,
) -> str:
    """The page. Each section is (heading, rows); a row is {query, query_image, truth, score, cells, truth_cell},
    a cell {name, image (RGB uint8, or None for new_individual or no photo), score, correct}, ``truth_cell`` None
    or {name, image, note} (a miss: the true individual's nearest photo). ``photos`` (heading, [(caption, image)])
    comes first when given."""
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>{GENERATOR}<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>",
    ]
    if photos is not None:
        heading, pictures = photos
        out.append(f"<h2>{html.escape(heading)}</h2><div class='photos'>")
        out.extend(
            f"<figure style='display:inline-block;margin:4px'><img src='{thumbnail(image)}' alt='{html.escape(c)}'>"
            f"<figcaption>{html.escape(c)}</figcaption></figure>"
            for c, image in pictures
        )
        out.append("</div>")
    for heading, rows in sections:
        out.append(f"<h2>{html.escape(heading)}</h2>")
        if not rows:
            out.append("<p class='note'>none</p>")
            continue
        out.append("<table>")
        for r in rows:
            out.append(
                f"<tr class='match' data-query='{html.escape(r['query'])}' data-map5='{r['score']:.3f}'>"
                f"<td class='query'><img src='{thumbnail(r['query_image'])}' alt='query'>{html.escape(r['query'])}<br>"
                f"truth: {html.escape(r['truth'])}<br>MAP@5 {r['score']:.2f}</td>"
            )
            out.extend(_cell(c) for c in r["cells"])
            if r.get("truth_cell") is not None:
                out.append(_truth_cell(r["truth_cell"]))
            out.append("</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


@dataclass
class _Rows:
    """What the rows of a report are made from: the rule's predictions of validation neighbours ``nn`` and
    each query's MAP@5; :meth:`row` builds one query's row (see :func:`render`)."""

    nn: Neighbours
    rule: Rule
    names: list[str]
    class_species: np.ndarray | None
    load_query: Callable[[str], np.ndarray]
    load_gallery: Callable[[str], np.ndarray]

    def __post_init__(self) -> None:
        nn = self.nn
        self.g_labels = np.asarray(nn.gallery_labels)
        self.pred = apply_rule(self.rule, nn, self.class_species)
        self.cand_labels, self.cand_scores = candidates(
            nn.sims, nn.rows, self.g_labels, self.rule.scoring, self.rule.vote_power
        )
        self.truth = query_truth(nn.query_labels, self.g_labels)
        self.score = precision_at_5(self.pred, self.truth)

    def _photo(self, q: int, label: int) -> tuple[int, float | None]:
        """Gallery row of the query's nearest photo of ``label`` and its score; any photo of ``label`` (score
        None) when none is among the query's neighbours; -1 when the gallery has none."""
        nn = self.nn
        photo = best_photo(nn.sims[q], nn.rows[q], self.g_labels, label)
        if photo >= 0:
            return photo, float(np.max(nn.sims[q][nn.rows[q] == photo]))
        anywhere = np.flatnonzero(self.g_labels == label)
        return (int(anywhere[0]) if len(anywhere) else -1), None

    def _image(self, photo: int) -> np.ndarray | None:
        return self.load_gallery(str(self.nn.gallery_images[photo])) if photo >= 0 else None

    def truth_cell(self, q: int) -> dict | None:
        """For a miss (the truth, a known individual, not among the five): its nearest photo and where it ranked."""
        truth = int(self.truth[q])
        if truth == NEW or truth in self.pred[q]:
            return None
        photo, sim = self._photo(q, truth)
        k = int((self.nn.rows[q] >= 0).sum())
        if sim is not None:
            slot = int(np.flatnonzero(self.nn.rows[q] == photo)[0]) + 1
            note = f"nearest photo: neighbour {slot} of {k}, score {sim:.3f}"
        else:
            note = f"not among the {k} neighbours"
        return {"name": self.names[truth], "image": self._image(photo), "note": note}

    def row(self, q: int) -> dict:
        nn, cells = self.nn, []
        score_of = dict(zip(self.cand_labels[q].tolist(), self.cand_scores[q].tolist(), strict=True))
        for label in self.pred[q]:
            if label == NEW:
                truth_new = bool(self.truth[q] == NEW)
                cells.append({"name": NEW_INDIVIDUAL, "image": None, "score": None, "correct": truth_new})
                continue
            photo = best_photo(nn.sims[q], nn.rows[q], self.g_labels, int(label))
            s = score_of.get(int(label))
            cells.append(
                {
                    "name": self.names[label],
                    "image": self._image(photo),
                    "score": None if s is None or not np.isfinite(s) else s,
                    "correct": bool(self.truth[q] == label),
                }
            )
        return {
            "query": str(nn.query_images[q]),
            "query_image": self.load_query(str(nn.query_images[q])),
            "truth": NEW_INDIVIDUAL if self.truth[q] == NEW else self.names[self.truth[q]],
            "score": float(self.score[q]),
            "cells": cells,
            "truth_cell": self.truth_cell(q),
        }

    def rule_line(self) -> str:
        r = self.rule
        return (
            f"rule {r.method}, threshold {r.threshold:.3f} ({r.scoring} scoring): new_individual goes before the "
            "first candidate scoring below it. Green: correct, red: wrong; for a miss, the dashed photo on the "
            "right is the true individual's nearest one."
        )


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
    rows = _Rows(nn, rule, [*classes], class_species, load_query, load_gallery)
    sample, worst = choose_queries(rows.score, rows.cand_scores[:, 0], n_sample, n_worst, seed)
    summary = f"{len(rows.score)} validation queries, MAP@5 {rows.score.mean():.4f} (unweighted); {rows.rule_line()}"
    return summary, [
        (f"A random sample of {len(sample)} queries", [rows.row(q) for q in sample]),
        (f"The {len(worst)} worst: missed queries, most confident first", [rows.row(q) for q in worst]),
    ]


def individual_sections(
    individual: str,
    nn: Neighbours,
    rule: Rule,
    classes: Sequence[str],
    *,
    class_species: np.ndarray | None,
    load_query: Callable[[str], np.ndarray],
    load_gallery: Callable[[str], np.ndarray],
    limit: int = 40,
) -> tuple[str, list[tuple[str, np.ndarray]], list[tuple[str, list[dict]]]]:
    """One individual's page: the summary line, its gallery photos (caption, image) and two sections: its own
    validation queries (what the rule put first, and where it ranked the individual) and the queries of other
    individuals that the rule gave it first (its confusions), most confident first; at most ``limit`` rows each."""
    names = [*classes]
    if individual not in names:
        raise KeyError(individual)
    label = names.index(individual)
    rows = _Rows(nn, rule, names, class_species, load_query, load_gallery)
    own = np.flatnonzero(np.asarray(nn.query_labels) == label)
    taken = np.flatnonzero((rows.pred[:, 0] == label) & (np.asarray(nn.query_labels) != label))
    taken = taken[np.argsort(-rows.cand_scores[taken, 0], kind="stable")]
    gallery = np.flatnonzero(rows.g_labels == label)
    photos = [(str(nn.gallery_images[g]), load_gallery(str(nn.gallery_images[g]))) for g in gallery[:limit]]
    others = [names[int(t)] for t in np.asarray(nn.query_labels)[taken] if int(t) >= 0]
    confused = ", ".join(f"{n} ({others.count(n)})" for n in dict.fromkeys(others)) or "none"
    summary = (
        f"{individual}: {len(gallery)} gallery photo(s), {len(own)} validation quer{'y' if len(own) == 1 else 'ies'}"
        f" (MAP@5 {rows.score[own].mean() if len(own) else float('nan'):.3f}); put first for {len(taken)} "
        f"other individuals' queries: {confused}. {rows.rule_line()}"
    )
    return (
        summary,
        photos,
        [
            (f"Its {len(own)} validation queries", [rows.row(q) for q in own[:limit]]),
            (f"{len(taken)} queries of other individuals it was put first for", [rows.row(q) for q in taken[:limit]]),
        ],
    )


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
