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
from whaleid.data.layout import NEW_INDIVIDUAL
from whaleid.data.resize import resize_split, resized_name
from whaleid.gallery.folder import Gallery, pad_centres
from whaleid.retrieval.keypoints import KeypointSet
from whaleid.retrieval.matching import describe
from whaleid.retrieval.search import combine
from whaleid.rule.candidates import NEW, candidates
from whaleid.rule.predict import apply_rule
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
    from whaleid.model.boxnet import detect_boxes, load_detector

    model, size = load_detector(path, run.torch_device())
    return detect_boxes(model, size, paths, run=run)


def embed_photos(
    gallery: Gallery,
    paths: Sequence[Path],
    *,
    boxes: dict[str, Box] | None,
    workdir: Path,
    batch_size: int = 64,
    exported: Sequence[Path] | None = None,
    run: Runtime = Runtime(),
) -> tuple[list[np.ndarray], dict[str, KeypointSet]]:
    """Each model's embeddings of ``paths`` (cropped, resized and embedded exactly as the pipeline does; by the
    ``exported`` files instead of the PyTorch models when given), and their keypoints when the gallery uses
    local features."""
    m = gallery.manifest
    fmt = m["resize_format"]
    missing = [p for p in paths if p.name not in (boxes or {})]
    if missing and (detector := gallery.check_detector()) is not None:  # given boxes win; the detector boxes the rest
        boxes = {**detected_boxes(detector, missing, run), **(boxes or {})}
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
        from whaleid.model.network import load_model

        device = run.torch_device()
        parts = []
        for path in gallery.check_models():
            model, _ = load_model(path, device)
            parts.append(
                extract_embeddings(
                    model,
                    resized,
                    m["img_size"],
                    batch_size=batch_size,
                    device=device,
                    desc=f"embed {path.parent.name}",
                    progress=run.progress,
                    flip_tta=m["flip_tta"],
                )
            )
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


def identify(
    gallery: Gallery,
    paths: Sequence[Path],
    *,
    boxes: dict[str, Box] | None = None,
    top_k: int = 5,
    exported: Sequence[Path] | None = None,
    run: Runtime = Runtime(),
) -> pd.DataFrame:
    """Per photo: its five predictions by the gallery's rule (``predictions``, as in submission.csv) and its
    ``top_k`` known individuals with their scores (``candidates``: ``id:score`` separated by spaces, best first)."""
    unique_names(paths)
    with tempfile.TemporaryDirectory(prefix="whaleid-identify-") as tmp:
        parts, kp = embed_photos(
            gallery,
            paths,
            boxes=boxes,
            workdir=Path(tmp),
            exported=exported,
            run=run,
        )
    nn = gallery.score(parts, [p.name for p in paths], kp, run=run)
    rule = gallery.rule
    species = gallery.individuals["species"].to_numpy(dtype=object)
    pred = apply_rule(rule, nn, species)
    labels, scores = candidates(nn.sims, nn.rows, nn.gallery_labels, rule.scoring, rule.vote_power)
    names = np.asarray([*gallery.individuals["individual_id"], NEW_INDIVIDUAL], dtype=object)
    predictions = labels_to_strings(pred, list(names[:-1]))
    rows = []
    for i, p in enumerate(paths):
        shown = [
            f"{names[c]}:{s:.4f}" for c, s in zip(labels[i, :top_k], scores[i, :top_k], strict=True) if np.isfinite(s)
        ]
        rows.append(
            {
                "image": p.name,
                "path": str(p),
                "predictions": predictions[i],
                "new_individual_first": bool(pred[i, 0] == NEW),
                "candidates": " ".join(shown),
            }
        )
    return pd.DataFrame(rows)


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
