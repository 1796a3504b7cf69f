"""The match report's rows (:func:`whaleid.rule.report.match_sections`) drawn as one image, ``reports/matches.jpg``,
which ``dvc plots show`` and ``dvc plots diff`` list beside the curves (a DVC image plot)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from whaleid.data.layout import NEW_INDIVIDUAL

GREEN, RED, BLUE, GREY, PURPLE = (40, 170, 40), (200, 30, 30), (70, 90, 200), (150, 150, 150), (160, 60, 200)


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
    border, then its five predictions, green when correct and red when wrong, captioned with their scores, and for
    a miss the true individual's nearest photo with a purple border)."""
    rows = []
    width = 7 * (size + 8)
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
            if r.get("truth_cell") is not None:  # a miss: the true individual's nearest photo, purple
                tiles.append(_tile(r["truth_cell"]["image"], PURPLE, "truth", size, "?"))
            line = np.full((tiles[0].shape[0], width, 3), 255, np.uint8)
            joined = np.concatenate(tiles, axis=1)
            line[:, : joined.shape[1]] = joined
            rows.append(line)
    return np.concatenate(rows, axis=0) if rows else np.full((1, width, 3), 255, np.uint8)
