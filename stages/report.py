"""DVC stage `report`: reports/matches.html, the match report of the `fold` model's validation queries (see
:mod:`whaleid.rule.report`), from the neighbours the rule was fitted on and the resized photos the model saw; and
reports/matches.jpg, the same rows as one image (a DVC plot)."""

import logging

import cv2

from whaleid.config import Params
from whaleid.core.atomic import write_bytes, write_text
from whaleid.pipeline.paths import MATCH_REPORT
from whaleid.pipeline.report import validation_view
from whaleid.pipeline.stage import run_stage
from whaleid.rule.report import match_sections, render
from whaleid.rule.sheet import contact_sheet

log = logging.getLogger("whaleid.report")
MATCH_SHEET = MATCH_REPORT.with_suffix(".jpg")  # the same rows as one image, for `dvc plots show`


def main(params: Params) -> None:
    summary, sections = match_sections(**validation_view(params).arguments(), seed=params.cv.seed)
    page = render(f"whaleid matches: validation fold {params.fold}", summary, sections)
    write_text(MATCH_REPORT, page)
    sheet = contact_sheet(sections)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
    write_bytes(MATCH_SHEET, jpeg.tobytes())
    log.info(
        "%s: %d validation queries shown (%.0f KB); open it in a browser, or `whaleid report --individual ID` "
        "for one individual",
        MATCH_REPORT,
        page.count("class='match'"),
        len(page) / 1024,
    )


if __name__ == "__main__":
    run_stage("report", main)
