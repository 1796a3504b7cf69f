"""The match report against a hand-made case: which cells are marked correct, where new_individual goes, which
queries are the worst, and that the page is well-formed, self-contained HTML."""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser

import numpy as np

from whaleid.retrieval.neighbours import Neighbours
from whaleid.rule.predict import Rule
from whaleid.rule.report import individual_sections, match_report, match_sections, precision_at_5, render
from whaleid.rule.sheet import BLUE, GREEN, PURPLE, RED, contact_sheet


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
    assert sheet.shape == (2 * 22 + 5 * tile_h, 7 * tile_w, 3)  # two headings, 4 sampled rows + 1 worst row
    # The border of each tile in q0's row (the first after the heading): query blue, then a red, b green, new red...
    # and no truth tile: b, the truth, is among the five.
    borders = [tuple(sheet[22 + 1, i * tile_w + 1]) for i in range(7)]
    assert borders == [BLUE, RED, GREEN, RED, RED, RED, (255, 255, 255)]
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
    # No truth cell where the truth is among the five (q0, q1) or is new (q2, q3).
    assert all(r["truth_cell"] is None for r in sections[0][1]) and "class='truth'" not in page


def test_a_miss_shows_the_truths_nearest_photo_and_where_it_ranked() -> None:
    # Individuals a..g (0..6), one gallery photo each. Both queries are g (6), missed by the five predictions:
    # qa has three neighbours, none g (its photo comes from the gallery); qb has all seven, g last at 0.3.
    nn = Neighbours(
        sims=np.array([[0.9, 0.8, 0.7, *[-np.inf] * 4], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]], np.float32),
        rows=np.array([[0, 1, 2, -1, -1, -1, -1], [0, 1, 2, 3, 4, 5, 6]]),
        gallery_labels=np.arange(7),
        query_labels=np.array([6, 6]),
        query_images=np.array(["qa.jpg", "qb.jpg"]),
        gallery_images=np.array([f"g{i}.jpg" for i in range(7)]),
    )
    photos = {n: np.full((8, 8, 3), 10 * i, np.uint8) for i, n in enumerate([*nn.query_images, *nn.gallery_images])}
    _, sections = match_sections(
        nn, Rule(threshold=0.1), list("abcdefg"), class_species=None, load_query=photos.__getitem__,
        load_gallery=photos.__getitem__, n_sample=2, n_worst=0,
    )  # fmt: skip
    qa, qb = (r["truth_cell"] for r in sections[0][1])
    assert qa["name"] == "g" and qa["note"] == "not among the 3 neighbours"
    assert qb["name"] == "g" and qb["note"] == "nearest photo: neighbour 7 of 7, score 0.300"
    np.testing.assert_array_equal(qa["image"], photos["g6.jpg"])
    np.testing.assert_array_equal(qb["image"], photos["g6.jpg"])
    page = render("t", "s", sections)
    parsed = Page()
    parsed.feed(page)
    assert not parsed.stack and page.count("truth: g</span>") == 2
    sheet = contact_sheet(sections, size=32)
    assert tuple(sheet[22 + 1, 6 * 40 + 1]) == PURPLE  # the truth tile, last in the row


def test_one_individuals_page_lists_its_queries_and_its_confusions() -> None:
    g_labels = np.array([0, 0, 1, 2, 3, 3, 4])
    nn = Neighbours(
        sims=np.array([[0.9, 0.8, 0.4], [0.95, 0.6, 0.55], [0.99, 0.7, 0.65]], np.float32),
        rows=np.array([[0, 2, 1], [3, 0, 2], [2, 0, 3]]),
        gallery_labels=g_labels,
        query_labels=np.array([1, 2, 9]),
        query_images=np.array(["q0.jpg", "q1.jpg", "q3.jpg"]),
        gallery_images=np.array([f"g{i}.jpg" for i in range(7)]),
    )
    photos = {n: np.full((8, 8, 3), 10 * i, np.uint8) for i, n in enumerate([*nn.query_images, *nn.gallery_images])}
    kw = dict(class_species=None, load_query=photos.__getitem__, load_gallery=photos.__getitem__)
    summary, gallery, (own, taken) = individual_sections("b", nn, Rule(threshold=0.5), list("abcdefghij"), **kw)
    # b (1): gallery photo g2; its own query q0 (b second: 0.5); put first for q3 (truth j, 0.99).
    assert [c for c, _ in gallery] == ["g2.jpg"]
    assert [r["query"] for r in own[1]] == ["q0.jpg"] and [r["query"] for r in taken[1]] == ["q3.jpg"]
    assert "1 gallery photo(s), 1 validation query (MAP@5 0.500)" in summary and ": j (1)." in summary
    page = render("b", summary, [own, taken], photos=("photos", gallery))
    parsed = Page()
    parsed.feed(page)
    assert not parsed.stack and [r["query"] for r in parsed.rows] == ["q0.jpg", "q3.jpg"]
    try:
        individual_sections("zz", nn, Rule(threshold=0.5), list("abcdefghij"), **kw)
    except KeyError as exc:
        assert "zz" in str(exc)
    else:
        raise AssertionError("an unknown individual must raise KeyError")


def test_precision_at_5_is_one_over_the_rank() -> None:
    pred = np.array([[3, 1, 2, 4, 5], [7, 8, 9, 1, 2], [-1, 1, 2, 3, 4]])
    truth = np.array([1, 3, -1])
    np.testing.assert_allclose(precision_at_5(pred, truth), [0.5, 0.0, 1.0])


def test_report_individual_writes_its_page_and_names_a_typo(reproduced, tmp_path) -> None:
    import sys

    import pandas as pd
    from tinyrepo import repo_env

    repo, _ = reproduced
    env = repo_env(repo)
    folds = pd.read_csv(repo / "data" / "prepared" / "folds.csv")
    ind = folds.loc[folds["fold"] == 0, "individual_id"].value_counts().index[0]  # has validation queries
    out = tmp_path / "one.html"
    cmd = [sys.executable, "-m", "whaleid.cli.main", "report", "--individual", ind]
    proc = subprocess.run([*cmd, "--out", str(out)], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{out}: open it in a browser" in proc.stdout and proc.stdout.startswith(f"{ind}: ")
    parsed = Page()
    parsed.feed(out.read_text(encoding="utf-8"))
    own = (folds["fold"] == 0) & (folds["individual_id"] == ind)
    assert not parsed.stack and len(parsed.rows) >= own.sum()  # its queries, then those it was put first for
    assert {r["query"] for r in parsed.rows} >= set(folds.loc[own, "image"])
    # A second run replaces its own page; a file whaleid did not write is refused; a typo gets suggestions.
    assert subprocess.run([*cmd, "--out", str(out)], cwd=repo, env=env, capture_output=True).returncode == 0
    other = tmp_path / "notes.html"
    other.write_text("my notes")
    proc = subprocess.run([*cmd, "--out", str(other)], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "not a whaleid report page" in proc.stderr and other.read_text() == "my notes"
    typo = ind[:-1] + ("x" if ind[-1] != "x" else "y")
    proc = subprocess.run([*cmd[:-1], typo], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "did you mean" in proc.stderr and ind in proc.stderr, proc.stderr
