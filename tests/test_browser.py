"""What users look at, rendered by a real browser (headless Chromium; skipped where none is installed:
``apt-get install chromium``): the page ``dvc plots show`` writes draws every chart with no network, the threshold
chart in its three colours with the fitted threshold marked, and the match reports keep every label clear of the
pictures. The pages come from the tiny project's `dvc repro` (the session fixture ``reproduced``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from tinyrepo import DVC, copy_repo, run

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")

# The threshold template's curve colours (.dvc/plots/threshold.json), as BGR.
CURVES = {"map5": (0xBF, 0x5F, 0x1F), "map5_known": (0x2A, 0x46, 0xD4), "map5_new": (0x44, 0x9E, 0x2E)}

# Run in the page once it has drawn: how many charts drew a canvas or SVG, and how many labels overlap a picture.
PROBE = """<script>
function whaleidProbe() {
  var drawn = document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length;
  var errors = document.querySelectorAll('.vega-embed .error, .vega-embed pre').length;
  var overlaps = 0, labels = 0;
  document.querySelectorAll('td').forEach(function (td) {
    var name = td.querySelector('.name'), pic = td.querySelector('img, .new');
    if (!name || !pic) return;
    labels++;
    var a = name.getBoundingClientRect(), b = pic.getBoundingClientRect();
    if (a.top < b.bottom && b.top < a.bottom && a.left < b.right && b.left < a.right) overlaps++;
    if (a.height < 8) overlaps++;  /* clipped away */
  });
  var out = document.getElementById('probe') || document.body.appendChild(document.createElement('output'));
  out.id = 'probe';
  out.textContent = 'drawn=' + drawn + ' errors=' + errors + ' labels=' + labels + ' overlaps=' + overlaps;
}
setInterval(whaleidProbe, 250);  /* the DOM is dumped when the virtual time runs out: the last reading */
</script>"""


def chromium(page: Path, tmp: Path, *extra: str) -> str:
    """Open ``page`` headless with no network; return the DOM after its scripts ran (``--dump-dom``) or ''."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp / 'profile'}",
        "--proxy-server=127.0.0.1:9",  # nothing outside the page can load: it must be self-contained
        "--virtual-time-budget=20000",
        *extra,
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def probe(page: Path, tmp: Path) -> dict[str, int]:
    probed = tmp / f"probed_{page.name}"
    head, _, tail = page.read_text(encoding="utf-8").rpartition("</body>")  # the last: the bundle's JS has some
    probed.write_text(head + PROBE + "</body>" + tail, encoding="utf-8")
    dom = chromium(probed, tmp, "--dump-dom")
    found = re.search(r"drawn=(\d+) errors=(\d+) labels=(\d+) overlaps=(\d+)", dom)
    assert found, dom[-2000:]
    return dict(zip(("drawn", "errors", "labels", "overlaps"), map(int, found.groups()), strict=True))


def colour_pixels(png: Path, bgr: tuple[int, int, int], tol: int = 12) -> int:
    image = cv2.imread(str(png))
    return int((np.abs(image.astype(int) - np.array(bgr)).max(axis=2) <= tol).sum())


def test_plots_page_draws_every_chart_offline_in_distinct_colours(reproduced, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    env = copy_repo(reproduced[0], repo)
    run([*DVC, "plots", "show", "-o", "page"], repo, env)
    page = repo / "page" / "index.html"
    text = page.read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in text and not re.search(r"<script[^>]+src=", text)  # nothing from the network
    charts = text.count("vegaEmbed('#")
    assert charts >= 2  # the threshold sweep and the training curves
    seen = probe(page, tmp_path)
    assert seen["errors"] == 0 and seen["drawn"] >= charts, seen
    # The threshold chart alone: its three curves each in their own colour, the fitted threshold ruled and named.
    run([*DVC, "plots", "show", "plots/threshold.csv", "-o", "threshold"], repo, env)
    shot = tmp_path / "threshold.png"
    chromium(repo / "threshold" / "index.html", tmp_path, f"--screenshot={shot}", "--window-size=900,700")
    counts = {name: colour_pixels(shot, bgr) for name, bgr in CURVES.items()}
    assert all(n > 150 for n in counts.values()), counts  # a line of ~20 points each, not a legend swatch alone
    spec = (repo / "threshold" / "index.html").read_text(encoding="utf-8")
    assert '"chosen_threshold"' in spec and "fitted " in spec


def test_match_reports_keep_every_label_clear_of_its_picture(reproduced, tmp_path: Path) -> None:
    repo, _ = reproduced
    seen = probe(repo / "reports" / "matches.html", tmp_path)
    assert seen["labels"] >= 5 * 30 and seen["overlaps"] == 0, seen
    shot = tmp_path / "matches.png"
    chromium(repo / "reports" / "matches.html", tmp_path, f"--screenshot={shot}", "--window-size=1000,900")
    assert cv2.imread(str(shot)) is not None
