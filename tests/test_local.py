"""Local-feature matching: geometric inliers on a known transform, the parallel pair loop against a plain loop,
the calibration, fusion re-ranking and the stage's pass-through when off."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from whaleid.config import LocalConfig
from whaleid.core.atomic import load_npz, save_npz
from whaleid.core.runtime import Runtime
from whaleid.retrieval.fusion import Calibration
from whaleid.retrieval.keypoints import KeypointSet, detect, detect_all
from whaleid.retrieval.matching import match_pair, pair_inliers
from whaleid.retrieval.neighbours import Neighbours

ROOT = Path(__file__).resolve().parents[1]


def texture(seed: int, size: int = 256) -> np.ndarray:
    """A grayscale pattern of random blobs and strokes (plenty of corners and blobs for SIFT)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 128, np.uint8)
    for _ in range(60):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), int(rng.integers(3, 14)), int(rng.integers(0, 255)), -1)
        else:
            x2, y2 = (int(v) for v in rng.integers(0, size, 2))
            cv2.line(img, (x, y), (x2, y2), int(rng.integers(0, 255)), int(rng.integers(1, 4)))
    return cv2.GaussianBlur(img, (3, 3), 0)


def warp(img: np.ndarray, angle: float, scale: float) -> np.ndarray:
    m = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), angle, scale)
    return cv2.warpAffine(img, m, img.shape[::-1], borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("method", ["sift", "orb"])
def test_a_rotated_scaled_copy_matches_and_another_pattern_does_not(method: str) -> None:
    a = detect(texture(0), method, 256)
    same = detect(warp(texture(0), 20, 0.9), method, 256)
    other = detect(texture(1), method, 256)
    binary = method == "orb"
    assert match_pair(a, same, binary=binary, ratio=0.8, ransac_px=8.0) >= 20
    assert match_pair(a, other, binary=binary, ratio=0.8, ransac_px=8.0) < 8
    assert (
        match_pair(a, (np.zeros((0, 2), np.float32), a[1][:0]), binary=binary, ratio=0.8, ransac_px=8.0) == 0
    )  # no keypoints


def test_pair_inliers_equals_a_plain_loop() -> None:
    cfg = LocalConfig(method="sift", top_pairs=3)
    feats = [detect(warp(texture(i % 3), 10 * i, 1.0), "sift", 128) for i in range(6)]
    kp = KeypointSet(
        np.array([f"{i}.png" for i in range(6)]),
        np.concatenate([p for p, _ in feats]),
        np.concatenate([d for _, d in feats]),
        np.concatenate([[0], np.cumsum([len(p) for p, _ in feats])]),
    )
    queries = np.array([0, 1, -1])
    rows = np.array([[3, 4, 5, 1], [2, -1, 4, 0], [1, 2, 3, 4]])
    got = pair_inliers(kp, kp, queries, rows, cfg, run=Runtime(n_jobs=2))
    want = np.zeros_like(got)
    for q in range(3):
        for j in range(3):  # top_pairs: the fourth column stays 0
            if queries[q] >= 0 and rows[q, j] >= 0:
                want[q, j] = match_pair(
                    feats[queries[q]], feats[rows[q, j]], binary=False, ratio=cfg.ratio, ransac_px=cfg.ransac_px
                )
    np.testing.assert_array_equal(got, want)
    assert got[0, 0] > 10  # image 3 is image 0's pattern, rotated


def test_calibration_rises_with_both_scores_and_fusion_reranks() -> None:
    rng = np.random.default_rng(0)
    same = rng.random(400) < 0.3
    sims = np.where(same, 0.7, 0.5) + rng.normal(0, 0.1, 400)
    inliers = np.where(same, rng.poisson(12, 400), rng.poisson(2, 400))
    cal = Calibration.fit({"cosine": sims, "inliers": inliers}, same)
    assert cal.names == ("cosine", "inliers") and min(cal.weights) > 0
    p = cal({"cosine": np.array([0.6, 0.6, 0.8]), "inliers": np.array([0, 20, 0])})
    assert p[1] > p[0] and p[2] > p[0] and ((p > 0) & (p < 1)).all()
    # by hand: the logistic of bias + w_cos * cosine + w_inliers * log(1 + inliers)
    z = cal.bias + cal.weights[0] * 0.6 + cal.weights[1] * np.log1p(20)
    assert p[1] == pytest.approx(1 / (1 + np.exp(-z)), rel=1e-6)
    with pytest.raises(ValueError, match="both kinds"):
        Calibration.fit({"cosine": sims, "inliers": inliers}, np.ones(400, bool))
    assert Calibration.from_dict(cal.to_dict()) == cal
    old = Calibration.from_dict({"bias": cal.bias, "w_cos": cal.weights[0], "w_inliers": cal.weights[1]})
    assert old == cal  # a gallery written before the N-score form still loads
    nn = Neighbours(np.array([[0.9, 0.8, 0.7, 0.0]], np.float32), np.array([[5, 6, 7, -1]]), np.arange(10))
    fused = nn.rescored(cal({"cosine": nn.sims, "inliers": np.array([[0, 30, 0, 0]])}))
    assert fused.rows[0].tolist() == [6, 5, 7, -1]  # the geometric match moves up; the missing slot stays last
    want = cal({"cosine": np.array([0.8, 0.9, 0.7]), "inliers": np.array([30, 0, 0])})
    np.testing.assert_allclose(fused.sims[0, :3], want, rtol=1e-6)
    assert np.isneginf(fused.sims[0, 3])


def test_keypoints_of_images_round_trip_through_npz(tiny_dataset: Path, tmp_path: Path) -> None:
    paths = sorted((tiny_dataset / "train_images").iterdir())[:5]
    kp = detect_all(paths, None, 0.0, LocalConfig(method="sift", max_side=96, max_keypoints=40), run=Runtime(n_jobs=1))
    assert len(kp.offsets) == 6 and kp.offsets[-1] == len(kp.points) == len(kp.descriptors)
    assert (np.diff(kp.offsets) <= 40).all() and kp.descriptors.dtype == np.uint8
    save_npz(tmp_path / "kp.npz", **kp.arrays())
    back = KeypointSet(**load_npz(tmp_path / "kp.npz"))
    np.testing.assert_array_equal(back.of(2)[1], kp.of(2)[1])


def test_local_stage_passes_neighbours_through_when_off(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "sims": rng.random((4, 3)).astype(np.float32),
        "rows": rng.integers(0, 5, (4, 3)),
        "query_images": np.array(list("abcd")),
        "query_labels": np.arange(4),
        "gallery_labels": np.arange(5),
        "gallery_images": np.array(list("vwxyz")),
    }
    Neighbours(**arrays).save(tmp_path / "data/neighbours/valid/fold0.npz")
    Neighbours(**arrays).save(tmp_path / "data/neighbours/test.npz")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"local": {"method": "none"}}))
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.local"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("valid/fold0.npz", "test.npz"):
        got = load_npz(tmp_path / "data/fused" / name)
        assert got.keys() == arrays.keys() and all(np.array_equal(got[k], arrays[k]) for k in arrays)
    shutil.rmtree(tmp_path / "data")
