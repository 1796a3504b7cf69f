"""DVC stage `report`: reports/matches.html, the match report of the `fold` model's validation queries (see
:mod:`whaleid.rule.report`), from the neighbours the rule was fitted on and the resized photos the model saw; and
reports/matches.jpg, the same rows as one image (a DVC plot)."""

import logging

import cv2

from whaleid.config import Params
from whaleid.core.atomic import read_json, write_bytes, write_text
from whaleid.data.images import read_image
from whaleid.data.resize import resized_name
from whaleid.pipeline.artifacts import class_species, folds_with_labels
from whaleid.pipeline.paths import MATCH_REPORT, RESIZED_DIR, ROUNDS_DIR, RULE
from whaleid.pipeline.stage import run_stage
from whaleid.retrieval.neighbours import Neighbours
from whaleid.rule.predict import Rule
from whaleid.rule.report import contact_sheet, match_sections, render

log = logging.getLogger("whaleid.report")
MATCH_SHEET = MATCH_REPORT.with_suffix(".jpg")  # the same rows as one image, for `dvc plots show`


def main(params: Params) -> None:
    folds, classes = folds_with_labels()
    nn = Neighbours.load(ROUNDS_DIR / "valid" / f"fold{params.fold}.npz")
    fmt = params.resize.format

    def load(name: str):  # noqa: ANN202 - validation queries and their gallery are both training photos
        return read_image(RESIZED_DIR / "train_images" / resized_name(name, fmt))

    summary, sections = match_sections(
        nn,
        Rule.from_dict(read_json(RULE), str(RULE)),
        classes,
        class_species=class_species(folds, len(classes)),
        load_query=load,
        load_gallery=load,
        seed=params.cv.seed,
    )
    page = render(f"whaleid matches: validation fold {params.fold}", summary, sections)
    write_text(MATCH_REPORT, page)
    sheet = contact_sheet(sections)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
    write_bytes(MATCH_SHEET, jpeg.tobytes())
    log.info(
        "%s: %d validation queries shown (%.0f KB); open it in a browser",
        MATCH_REPORT,
        page.count("class='match'"),
        len(page) / 1024,
    )


if __name__ == "__main__":
    run_stage("report", main)
