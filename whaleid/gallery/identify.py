"""Embedding new photos against a gallery (:mod:`whaleid.gallery.folder`): ``identify`` (the known individuals most like
each photo, by the gallery's rule) and ``add_photos`` (grow a gallery without retraining). Photos go through exactly
the submission's chain: decode, crop (the boxes given, else the gallery's detector's, else none), resize, embed with every model (or with files `whaleid
export` wrote), combine, kNN, blend, local-feature fusion with the saved calibration, the rule."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from whaleid.core.errors import DataError
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import Box
from whaleid.data.images import check_images
from whaleid.gallery.embedding import Loaded, boxed, embed_photos, load_networks
from whaleid.gallery.folder import Gallery, pad_centres
from whaleid.retrieval.neighbours import Neighbours
from whaleid.retrieval.search import combine
from whaleid.rule.candidates import N_PRED, NEW
from whaleid.rule.predict import ranked
from whaleid.rule.submission import labels_to_strings


def readable(paths: Sequence[Path], run: Runtime = Runtime()) -> tuple[list[Path], list[str]]:
    """The photos that decode, and one message per photo that does not (named)."""
    errors, digests = check_images(paths, run)
    return [p for p, d in zip(paths, digests, strict=True) if d], errors  # no digest: it did not decode


def unique_names(paths: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for p in paths:
        if p.name in seen:
            raise DataError(
                f"{p} and {seen[p.name]} share the file name {p.name!r}; photos are named by file name "
                "in the gallery, so rename one."
            )
        seen[p.name] = p


class Identifier:
    """A gallery with its networks loaded once, identifying photos in memory: the API behind `whaleid identify`
    for notebooks and services, where loading the models for every photo would cost more than identifying it::

        ident = Identifier.open("gallery")
        table = ident.identify([Path("photo.jpg")])  # as `whaleid identify`, one row per photo

    Every call goes through the submission's chain (see the module docstring) with the gallery as it was opened."""

    def __init__(self, gallery: Gallery, run: Runtime = Runtime(), exported: Sequence[Path] | None = None) -> None:
        self.gallery, self.run, self.exported = gallery, run, list(exported) if exported else None
        self.loaded = load_networks(gallery, run, models=not self.exported)

    @classmethod
    def open(cls, root: str | Path, run: Runtime = Runtime(), exported: Sequence[Path] | None = None) -> Identifier:
        return cls(Gallery.load(root), run, exported)

    def identify(
        self, paths: Sequence[Path], *, boxes: dict[str, Box] | None = None, top_k: int = N_PRED
    ) -> pd.DataFrame:
        """Per photo: its five predictions by the gallery's rule (``predictions``, as in submission.csv), its
        ``top_k`` best known individuals (``candidates``: a list of ``{individual_id, score, species,
        local_inliers}``, best first; ``local_inliers`` is the local matcher's raw score of the individual's best
        matched photo, SIFT's RANSAC inliers by default, null where no photo of it was matched), the threshold applied, and the box it was cropped to with where the box came from."""
        gallery, paths = self.gallery, [Path(p) for p in paths]
        unique_names(paths)
        given = dict(boxes or {})
        with tempfile.TemporaryDirectory(prefix="whaleid-identify-") as tmp:
            drawn = (
                {}
                if self.loaded.detector is None
                else boxed(self.loaded.detector, [p for p in paths if p.name not in given], self.run)
            )
            parts, kp = embed_photos(
                gallery,
                paths,
                boxes={**drawn, **given},
                workdir=Path(tmp),
                exported=self.exported,
                loaded=Loaded(self.loaded.models, None),  # boxes drawn above, once
                run=self.run,
            )
        nn, inliers = gallery.score_with_inliers(parts, [p.name for p in paths], kp, run=self.run)
        rule = gallery.rule
        species = gallery.individuals["species"].to_numpy(dtype=object)
        pred, labels, scores, thresholds = ranked(rule, nn, species, n=top_k)
        names = np.asarray(gallery.individuals["individual_id"], dtype=object)
        predictions = labels_to_strings(pred, list(names))
        rows, photo_labels = [], gallery.labels
        for i, p in enumerate(paths):
            local = _best_inliers(nn, inliers, i, photo_labels)
            found = [
                {
                    "individual_id": str(names[c]),
                    "score": round(float(s), 6),
                    "species": str(species[c]),
                    "local_inliers": local.get(int(c)),
                }
                for c, s in zip(labels[i, :top_k], scores[i, :top_k], strict=True)
                if c >= 0 and np.isfinite(s)
            ]
            box = given.get(p.name) or drawn.get(p.name)
            rows.append(
                {
                    "image": p.name,
                    "path": str(p),
                    "predictions": predictions[i],
                    "new_individual_first": bool(pred[i, 0] == NEW),
                    "threshold": round(float(thresholds[i]), 6),
                    "box": [round(float(v), 1) for v in box] if box is not None else None,
                    "crop": "given" if p.name in given else "detector" if p.name in drawn else "whole photo",
                    "candidates": found,
                }
            )
        return pd.DataFrame(rows)


def _best_inliers(nn: Neighbours, inliers: np.ndarray | None, q: int, gallery_labels: np.ndarray) -> dict[int, float]:
    """Query ``q``'s best raw local match score per individual over its matched neighbours (the photo of that
    individual that matched best: SIFT inliers, a learned matcher's confident matches); empty without local
    features. Individuals with no matched photo are absent (their ``local_inliers`` is null)."""
    if inliers is None:
        return {}
    best: dict[int, float] = {}
    for row, value in zip(nn.rows[q], inliers[q], strict=True):
        if row >= 0 and np.isfinite(value):
            label = int(gallery_labels[row])
            best[label] = max(best.get(label, -np.inf), round(float(value), 3))
    return best


def identify(
    gallery: Gallery,
    paths: Sequence[Path],
    *,
    boxes: dict[str, Box] | None = None,
    top_k: int = N_PRED,
    exported: Sequence[Path] | None = None,
    run: Runtime = Runtime(),
) -> pd.DataFrame:
    """:meth:`Identifier.identify` once (the networks loaded for this call only)."""
    return Identifier(gallery, run, exported).identify(paths, boxes=boxes, top_k=top_k)


def add_photos(
    gallery: Gallery,
    paths: Sequence[Path],
    ids: Sequence[str],
    *,
    species: Sequence[str] | None = None,
    boxes: dict[str, Box] | None = None,
    run: Runtime = Runtime(),
) -> Gallery:
    """``gallery`` with ``paths`` added as photos of individuals ``ids`` (new individuals get ``species``, "" when
    unknown). Refuses an unreadable photo, one already in the gallery (same file name or same bytes) and one given
    twice (same bytes under two names) before embedding anything."""
    from whaleid.data.layout import check_labels

    unique_names(paths)
    frame = pd.DataFrame(
        {
            "image": [p.name for p in paths],
            "individual_id": list(ids),
            "species": list(species) if species is not None else [""] * len(paths),
        }
    )
    check_labels(frame.assign(species=frame["species"].replace("", "unknown")), "the photos to add")
    known_ids = {i.lower(): i for i in gallery.individuals["individual_id"]}
    for i in frame["individual_id"].unique():
        if i not in set(known_ids.values()) and i.lower() in known_ids:
            raise DataError(
                f"individual_id {i!r} differs from the gallery's {known_ids[i.lower()]!r} only in letter "
                "case; one animal or two? Use the gallery's spelling for the same animal."
            )
    taken = set(gallery.photos["image"])
    clash = [n for n in frame["image"] if n in taken]
    if clash:
        raise DataError(
            f"{clash[0]}: a gallery photo already has this name ({len(clash)} clash(es)); rename the "
            "file or remove the old photo with `whaleid gallery remove --image`."
        )
    errors, digests = check_images(paths, run)  # decoded, and hashed on the way
    if errors:
        raise DataError(f"{len(errors)} photo(s) cannot be read, nothing added: {errors[0]}")
    known = dict(zip(gallery.photos["sha1"], gallery.photos["image"], strict=True))
    dup = [(p, known[d]) for p, d in zip(paths, digests, strict=True) if d in known]
    if dup:
        raise DataError(f"{dup[0][0]} is already in the gallery as {dup[0][1]} (same bytes; {len(dup)} duplicate(s)).")
    given: dict[str, Path] = {}
    for p, d in zip(paths, digests, strict=True):
        if given.setdefault(d, p) != p:
            raise DataError(f"{p} and {given[d]} are the same photo (same bytes), nothing added; give it once.")
    with tempfile.TemporaryDirectory(prefix="whaleid-gallery-") as tmp:
        parts, kp = embed_photos(gallery, paths, boxes=boxes, workdir=Path(tmp), run=run)
    vectors = combine(parts)
    individuals = gallery.individuals
    new = frame.drop_duplicates("individual_id")
    new = new[~new["individual_id"].isin(individuals["individual_id"])]
    if len(new):
        individuals = pd.concat(
            [
                individuals,
                pd.DataFrame({"individual_id": new["individual_id"], "species": new["species"], "trained": False}),
            ],
            ignore_index=True,
        )
    centres = {n: pad_centres(c, len(individuals)) for n, c in gallery.centres.items()}
    start = int(gallery.photos["id"].max()) + 1 if len(gallery.photos) else 0
    new_ids = np.arange(start, start + len(paths), dtype=np.int64)
    gallery.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), new_ids)
    photos = pd.concat(
        [
            gallery.photos,
            pd.DataFrame(
                {"id": new_ids, "image": frame["image"], "individual_id": frame["individual_id"], "sha1": digests}
            ),
        ],
        ignore_index=True,
    )
    keypoints = {method: k.concat(kp[method]) for method, k in gallery.keypoints.items()}
    return Gallery(
        gallery.manifest,
        photos,
        individuals,
        np.concatenate([gallery.embeddings, vectors]),
        centres,
        keypoints,
        gallery.index,
    )
