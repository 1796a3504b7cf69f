"""The page ``dvc plots show`` writes, made to work offline.

DVC's own page loads vega, vega-lite and vega-embed from a CDN, so without a network every chart is blank. The
stage ``plots_page`` writes ``reports/plots_template.html``, a DVC HTML template (``.dvc/config`` names it as
``plots.html_template``) with the three libraries inlined from the pinned ``vl-convert-python`` wheel: the page
``dvc plots show`` writes then opens anywhere, with no network and nothing else beside it. The charts themselves
come from DVC's vega templates; ``.dvc/plots/threshold.json`` draws the threshold sweep (one colour and one
marker per curve, a dash per experiment, the fitted threshold as a vertical rule).
"""

from __future__ import annotations

import html

VEGALITE_VERSION = "5.21"  # DVC's templates are vega-lite v5 specifications
PLOT_DIVS = "{plot_divs}"  # where DVC puts its charts (dvc_render.html.HTML)
REFRESH = "{refresh_tag}"  # `dvc plots show --open` auto-refresh (optional placeholder)

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em}p.note{color:#555;margin:0 0 1em;max-width:60em}
body>div{display:inline-block;vertical-align:top;margin:0 1.5em 1.5em 0}
img{max-width:100%}.vega-embed .vega-bind{display:none}"""


def vega_bundle() -> str:
    """vega, vega-lite and vega-embed as one classic script that defines ``vega``, ``vegaLite`` and ``vegaEmbed``
    on ``window`` (built by vl-convert from the versions it pins; about 0.9 MB)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGALITE_VERSION)
    if "</script" in bundle.lower() or PLOT_DIVS in bundle or REFRESH in bundle:  # would break the page or DVC
        raise ValueError("the vega bundle contains '</script' or a DVC placeholder; it cannot be inlined")
    return bundle


def offline_template(bundle: str, title: str = "whaleid plots") -> str:
    """The DVC HTML template: ``bundle`` inlined, DVC's charts where ``{plot_divs}`` stands. It leaves out DVC's
    ``{scripts}`` placeholder, which is where DVC would put its CDN script tags."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>" + REFRESH + f"<title>{html.escape(title)}</title>\n"
        f"<style>{CSS}</style>\n<script>\n{bundle}\n</script>\n</head><body>\n"
        f"<h1>{html.escape(title)}</h1><p class='note'>Written by <code>dvc plots show</code> from this "
        "project's plots; vega, vega-lite and vega-embed are inlined (no network needed). Drag to pan, scroll to "
        "zoom; the ... menu saves a chart as SVG or PNG.</p>\n" + PLOT_DIVS + "\n</body></html>\n"
    )
