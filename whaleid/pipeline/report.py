"""What the match reports read: the ``fold`` model's validation neighbours as the rule was fitted on them, the rule,
the class names and species, and the resized photos the model saw (``reports/matches.html`` from stage
``report``, one individual's page from ``whaleid report --individual ID``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from whaleid.config import Params
from whaleid.core.atomic import read_json
from whaleid.data.images import read_image
from whaleid.data.resize import resized_name
from whaleid.pipeline.artifacts import class_species, folds_with_labels
from whaleid.pipeline.paths import RESIZED_DIR, ROUNDS_DIR, RULE
from whaleid.retrieval.neighbours import Neighbours
from whaleid.rule.predict import Rule


@dataclass(frozen=True)
class ValidationView:
    """The inputs of :func:`whaleid.rule.report.match_sections` and ``individual_sections`` for one run."""

    nn: Neighbours
    rule: Rule
    classes: list[str]
    class_species: np.ndarray | None
    load: Callable[[str], np.ndarray]  # a training photo by name, as the model saw it (RGB uint8)

    def arguments(self) -> dict:
        """The keyword arguments both report builders take (``nn``, ``rule``, ``classes``, species, loaders)."""
        return dict(
            nn=self.nn,
            rule=self.rule,
            classes=self.classes,
            class_species=self.class_species,
            load_query=self.load,
            load_gallery=self.load,
        )


def validation_view(params: Params) -> ValidationView:
    folds, classes = folds_with_labels()
    fmt = params.resize.format

    def load(name: str) -> np.ndarray:  # validation queries and their gallery are both training photos
        return read_image(RESIZED_DIR / "train_images" / resized_name(name, fmt))

    return ValidationView(
        nn=Neighbours.load(ROUNDS_DIR / "valid" / f"fold{params.fold}.npz"),
        rule=Rule.from_dict(read_json(RULE), str(RULE)),
        classes=list(classes),
        class_species=class_species(folds, len(classes)),
        load=load,
    )
