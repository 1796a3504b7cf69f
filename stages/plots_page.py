"""DVC stage `plots_page`: reports/plots_template.html, the HTML template ``dvc plots show`` fills (named by
``plots.html_template`` in .dvc/config), with vega, vega-lite and vega-embed inlined so the plots page renders
offline (see :mod:`whaleid.pipeline.plots`)."""

import logging

from whaleid.config import Params
from whaleid.core.atomic import write_text
from whaleid.pipeline.paths import PLOTS_TEMPLATE
from whaleid.pipeline.plots import offline_template, vega_bundle
from whaleid.pipeline.stage import run_stage

log = logging.getLogger("whaleid.plots_page")


def main(params: Params) -> None:  # noqa: ARG001 - the page depends on no parameter
    page = offline_template(vega_bundle())
    write_text(PLOTS_TEMPLATE, page)
    log.info("%s: %.0f KB; `dvc plots show` now renders offline", PLOTS_TEMPLATE, len(page) / 1024)


if __name__ == "__main__":
    run_stage("plots_page", main)
