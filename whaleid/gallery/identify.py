"""Embedding new photos against a gallery (:mod:`whaleid.gallery.folder`): ``identify`` (the known individuals most like
each photo, by the gallery's rule) and ``add_photos`` (grow a gallery without retraining). Photos go through exactly
the submission's chain: decode, crop (the boxes given, else the gallery's detector's, else none), resize, embed with every model (or with files `whaleid
export` wrote), combine, kNN, blend, local-feature fusion with the saved calibration, the rule."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whaleid.core.errors import DataError
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import Box
from whaleid.data.images import check_images
from whaleid.data.resize import resize_split, resized_name
from whaleid.gallery.folder import Gallery, pad_centres
from whaleid.retrieval.keypoints import KeypointSet
from whaleid.retrieval.matching import describe
from whaleid.retrieval.search import combine
from whaleid.rule.candidates import N_PRED, NEW, candidates
from whaleid.rule.predict import apply_rule, rule_thresholds
from whaleid.rule.submission import labels_to_strings


def _exported_parts(
    gallery: Gallery, exported: Sequence[Path], resized: Sequence[Path], batch_size: int
) -> list[np.ndarray]:
    """Embeddings by files `whaleid export` wrote, one per gallery model (same order), checked against the
    manifest: the same source model (SHA-256), input size and flip TTA."""
    from whaleid.data.images import read_image
    from whaleid.model.export import ExportedEmbedder

    models = gallery.manifest["models"]
    if len(exported) != len(models):
        raise DataError(
            f"--exported: {len(exported)} file(s) for a gallery of {len(models)} model(s) "
            f"({', '.join(m['path'] for m in models)}); give one per model, in that order."
        )
    parts = []
    for path, m in zip(exported, models, strict=True):
        run = ExportedEmbedder(path)
        want = {
            "model_sha256": m["sha256"],
            "img_size": gallery.manifest["img_size"],
            "flip_tta": gallery.manifest["flip_tta"],
        }
        got = {k: run.meta.get(k) for k in want}
        if got != want:
            bad = next(k for k in want if got[k] != want[k])
            raise DataError(
                f"{path} was exported with {bad} {got[bad]!r}, but the gallery's {m['path']} needs "
                f"{want[bad]!r}: `whaleid export {m['path']} ...` again."
            )
        rows = [
            run(np.stack([read_image(p) for p in resized[i : i + batch_size]]))
            for i in range(0, len(resized), batch_size)
        ]
        parts.append(np.concatenate(rows).astype(np.float32))
    return parts


def detected_boxes(path: Path, paths: Sequence[Path], run: Runtime = Runtime()) -> dict[str, Box]:
    """Boxes for ``paths`` by the gallery's detector (stage detect's model), as the pipeline drew the test photos'."""
    from whaleid.model.boxnet import load_detector

    return _boxed(load_detector(path, run.torch_device()), paths, run)


def _boxed(detector: tuple, paths: Sequence[Path], run: Runtime) -> dict[str, Box]:
    from whaleid.model.boxnet import detect_boxes

    model, size = detector
    return detect_boxes(model, size, paths, run=run)


@dataclass
class Loaded:
    """A gallery's networks in memory: its embedding models (manifest order) and its box detector (None when the
    gallery's photos were not cropped by one)."""

    models: list
    detector: tuple | None


def load_networks(gallery: Gallery, run: Runtime = Runtime()) -> Loaded:
    """Each model file the gallery names, checked (SHA-256) and loaded once, and its detector."""
    from whaleid.model.boxnet import load_detector
    from whaleid.model.network import load_model

    device = run.torch_device()
    detector = gallery.check_detector()
    return Loaded(
        [load_model(path, device)[0] for path in gallery.check_models()],
        load_detector(detector, device) if detector is not None else None,
    )


def embed_photos(
    gallery: Gallery,
    paths: Sequence[Path],
    *,
    boxes: dict[str, Box] | None,
    workdir: Path,
    batch_size: int = 64,
    exported: Sequence[Path] | None = None,
    loaded: Loaded | None = None,
    run: Runtime = Runtime(),
) -> tuple[list[np.ndarray], dict[str, KeypointSet]]:
    """Each model's embeddings of ``paths`` (cropped, resized and embedded exactly as the pipeline does; by the
    ``exported`` files instead of the PyTorch models when given), and their keypoints when the gallery uses
    local features. ``loaded``: the gallery's networks already in memory (:class:`Identifier`), else loaded here."""
    m = gallery.manifest
    fmt = m["resize_format"]
    if loaded is None:
        loaded = load_networks(gallery, run) if not exported else Loaded([], None)
        if exported and gallery.check_detector() is not None:
            loaded = Loaded([], load_networks(gallery, run).detector)
    missing = [p for p in paths if p.name not in (boxes or {})]
    if missing and loaded.detector is not None:  # given boxes win; the detector boxes the rest
        boxes = {**_boxed(loaded.detector, missing, run), **(boxes or {})}
    resize_split(
        paths,
        workdir,
        workdir / ".cache",
        size=m["img_size"],
        boxes=boxes,
        margin=m["crop_margin"],
        fmt=fmt,
        desc="resize",
        run=run,
    )
    resized = [workdir / resized_name(p.name, fmt) for p in paths]
    if exported:
        parts = _exported_parts(gallery, exported, resized, batch_size)
    else:
        from whaleid.model.embed import extract_embeddings

        device = run.torch_device()
        parts = [
            extract_embeddings(
                model,
                resized,
                m["img_size"],
                batch_size=batch_size,
                device=device,
                desc=f"embed {entry['name']}",
                progress=run.progress,
                flip_tta=m["flip_tta"],
            )
            for model, entry in zip(loaded.models, m["models"], strict=True)
        ]
    kp = {
        method: describe(method, paths, boxes, m["crop_margin"], gallery.local, desc=method, run=run)
        for method in gallery.keypoints
    }
    return parts, kp


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
        self.loaded = load_networks(gallery, run)
        if self.exported:
            self.loaded = Loaded([], self.loaded.detector)

    @classmethod
    def open(cls, root: str | Path, run: Runtime = Runtime(), exported: Sequence[Path] | None = None) -> Identifier:
        return cls(Gallery.load(root), run, exported)

    def identify(
        self, paths: Sequence[Path], *, boxes: dict[str, Box] | None = None, top_k: int = N_PRED
    ) -> pd.DataFrame:
        """Per photo: its five predictions by the gallery's rule (``predictions``, as in submission.csv), its
        ``top_k`` best known individuals (``candidates``: a list of ``{individual_id, score, species}``, best
        first), the threshold applied, and the box it was cropped to with where the box came from."""
        gallery, paths = self.gallery, [Path(p) for p in paths]
        unique_names(paths)
        given = dict(boxes or {})
        with tempfile.TemporaryDirectory(prefix="whaleid-identify-") as tmp:
            drawn = (
                {}
                if self.loaded.detector is None
                else _boxed(self.loaded.detector, [p for p in paths if p.name not in given], self.run)
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
        nn = gallery.score(parts, [p.name for p in paths], kp, run=self.run)
        rule = gallery.rule
        species = gallery.individuals["species"].to_numpy(dtype=object)
        pred = apply_rule(rule, nn, species)
        labels, scores = candidates(
            nn.sims, nn.rows, nn.gallery_labels, rule.scoring, rule.vote_power, n=max(top_k, N_PRED)
        )
        thresholds = rule_thresholds(rule, labels, scores, species if rule.species_thresholds else None)
        names = np.asarray(gallery.individuals["individual_id"], dtype=object)
        predictions = labels_to_strings(pred, list(names))
        rows = []
        for i, p in enumerate(paths):
            found = [
                {"individual_id": str(names[c]), "score": round(float(s), 6), "species": str(species[c])}
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
