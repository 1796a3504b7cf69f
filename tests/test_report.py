"""The match report against a hand-made case: which cells are marked correct, where new_individual goes, which
queries are the worst, and that the page is well-formed, self-contained HTML."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np

from whaleid.retrieval.neighbours import Neighbours
from whaleid.rule.predict import Rule
from whaleid.rule.report import BLUE, GREEN, RED, contact_sheet, match_report, match_sections, precision_at_5


class Page(HTMLParser):
    """Rows of the page: per row the query name and its cells' (text, classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.stack: list[str] = []
        self.cell: dict | None = None
        self.images: list[str] = []
        self.in_name = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag not in ("img", "br", "meta"):
            self.stack.append(tag)
        if tag == "tr":
            self.rows.append({"query": a["data-query"], "map5": float(a["data-map5"]), "cells": []})
        elif tag == "td" and "candidate" in a.get("class", ""):
            self.cell = {"classes": a["class"].split(), "text": ""}
            self.rows[-1]["cells"].append(self.cell)
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "span" and self.cell is not None:
            self.in_name = True

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        self.in_name = False
        if tag == "td":
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.in_name:
            self.cell["text"] += data


def test_report_marks_what_a_hand_check_says() -> None:
    # Gallery: 7 photos of individuals 0..4 (class names a..e). Threshold 0.5.
    g_labels = np.array([0, 0, 1, 2, 3, 3, 4])
    nn = dict(
        sims=np.array(
            [
                [0.9, 0.8, 0.4, 0.3, 0.2, 0.1],  # q0: truth 1 ... ranks 0 first: wrong then new, 1 third
                [0.95, 0.6, 0.55, 0.3, 0.2, 0.1],  # q1: truth 2, ranked first above threshold: correct
                [0.45, 0.4, 0.3, 0.2, 0.1, 0.05],  # q2: truth new (individual 9), all below: new first
                [0.99, 0.7, 0.65, 0.6, 0.55, 0.52],
            ],  # q3: truth new, confident and wrong: the worst
            dtype=np.float32,
        ),
        rows=np.array([[0, 2, 1, 3, 4, 5], [3, 0, 2, 4, 5, 1], [4, 0, 2, 3, 1, 5], [2, 0, 3, 4, 6, 1]]),
        query_images=np.array(["q0.jpg", "q1.jpg", "q2.jpg", "q3.jpg"]),
        query_labels=np.array([1, 2, 9, 9]),
        gallery_labels=g_labels,
        gallery_images=np.array([f"g{i}.jpg" for i in range(7)]),
    )
    nn = Neighbours(**nn)
    photos = {n: np.full((20, 30, 3), 20 * i, np.uint8) for i, n in enumerate([*nn.query_images, *nn.gallery_images])}
    page = match_report(
        nn,
        Rule(threshold=0.5),
        ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"],
        class_species=None,
        load_query=photos.__getitem__,
        load_gallery=photos.__getitem__,
        n_sample=4,
        n_worst=2,
        seed=0,
    )
    _, sections = match_sections(
        nn,
        Rule(threshold=0.5),
        list("abcdefghij"),
        class_species=None,
        load_query=photos.__getitem__,
        load_gallery=photos.__getitem__,
        n_sample=4,
        n_worst=2,
        seed=0,
    )
    sheet = contact_sheet(sections, size=32)
    tile_w, tile_h = 32 + 8, 32 + 8 + 14
    assert sheet.shape == (2 * 22 + 5 * tile_h, 6 * tile_w, 3)  # two headings, 4 sampled rows + 1 worst row
    # The border of each tile in q0's row (the first after the heading): query blue, then a red, b green, new red...
    borders = [tuple(sheet[22 + 1, i * tile_w + 1]) for i in range(6)]
    assert borders == [BLUE, RED, GREEN, RED, RED, RED]
    assert tuple(sheet[22 + tile_h + 1, tile_w + 1]) == GREEN  # q1: c first, correct
    parsed = Page()
    parsed.feed(page)
    assert not parsed.stack and page.startswith("<!DOCTYPE html>")
    assert all(src.startswith("data:image/jpeg;base64,") for src in parsed.images)  # self-contained
    sample, worst = parsed.rows[:4], parsed.rows[4:]
    assert [r["query"] for r in sample] == ["q0.jpg", "q1.jpg", "q2.jpg", "q3.jpg"]
    cells = {r["query"]: [(c["text"], "ok" in c["classes"]) for c in r["cells"]] for r in sample}
    # q0: 0.9 (a) and 0.8 (b) pass the threshold, then new_individual, then 0.3 (c), 0.2 (d).
    assert cells["q0.jpg"] == [("a", False), ("b", True), ("new_individual", False), ("c", False), ("d", False)]
    assert cells["q1.jpg"][0] == ("c", True) and cells["q1.jpg"][1][0] == "a"
    assert cells["q2.jpg"][0] == ("new_individual", True)
    assert [r["map5"] for r in sample] == [0.5, 1.0, 1.0, 0.0]
    # Worst: only q3 missed (MAP@5 0); it is listed once.
    assert [r["query"] for r in worst] == ["q3.jpg"]
    assert "threshold 0.500" in page


def test_precision_at_5_is_one_over_the_rank() -> None:
    pred = np.array([[3, 1, 2, 4, 5], [7, 8, 9, 1, 2], [-1, 1, 2, 3, 4]])
    truth = np.array([1, 3, -1])
    np.testing.assert_allclose(precision_at_5(pred, truth), [0.5, 0.0, 1.0])
