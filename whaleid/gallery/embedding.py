"""New photos to embeddings exactly as the pipeline made the gallery's: the gallery's detector boxes them (unless
boxes are given), they are cropped and resized as stage resize does, embedded by every gallery model (or by files
`whaleid export` wrote, checked against the manifest) and described by its local-feature methods. The networks
load once per :class:`Loaded` (see :class:`whaleid.gallery.identify.Identifier`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whaleid.config import LocalConfig
from whaleid.core.errors import DataError
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import Box
from whaleid.data.resize import resize_split, resized_name
from whaleid.gallery.folder import Gallery
from whaleid.retrieval.keypoints import KeypointSet
from whaleid.retrieval.matching import describe


def describe_photos(
    method: str,
    paths: Sequence[Path],
    boxes: dict[str, Box] | None,
    margin: float,
    cfg: LocalConfig,
    *,
    desc: str,
    run: Runtime = Runtime(),
) -> KeypointSet:
    """The photos described by one of ``local``'s methods: a local-feature method
    (:func:`whaleid.retrieval.matching.describe`), or the frozen global descriptor (:mod:`whaleid.model.descriptor`,
    a model, which the retrieval layer does not import)."""
    if method == "descriptor":
        from whaleid.model.descriptor import describe_all  # torch and timm: imported only when used

        return KeypointSet(**describe_all(paths, boxes, margin, cfg, desc=desc, run=run))
    return describe(method, paths, boxes, margin, cfg, desc=desc, run=run)


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

    return boxed(load_detector(path, run.torch_device()), paths, run)


def boxed(detector: tuple, paths: Sequence[Path], run: Runtime) -> dict[str, Box]:
    from whaleid.model.boxnet import detect_boxes

    model, size = detector
    return detect_boxes(model, size, paths, run=run)


@dataclass
class Loaded:
    """A gallery's networks in memory: its embedding models (manifest order) and its box detector (None when the
    gallery's photos were not cropped by one)."""

    models: list
    detector: tuple | None


def load_networks(gallery: Gallery, run: Runtime = Runtime(), models: bool = True) -> Loaded:
    """Each model file the gallery names, checked (SHA-256) and loaded once (``models=False``: none, for photos
    embedded by exported files), and its detector."""
    from whaleid.model.boxnet import load_detector
    from whaleid.model.network import load_model

    device = run.torch_device()
    detector = gallery.check_detector()
    return Loaded(
        [load_model(path, device)[0] for path in gallery.check_models()] if models else [],
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
        loaded = load_networks(gallery, run, models=not exported)
    missing = [p for p in paths if p.name not in (boxes or {})]
    if missing and loaded.detector is not None:  # given boxes win; the detector boxes the rest
        boxes = {**boxed(loaded.detector, missing, run), **(boxes or {})}
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
        method: describe_photos(method, paths, boxes, m["crop_margin"], gallery.local, desc=method, run=run)
        for method in gallery.keypoints
    }
    return parts, kp
