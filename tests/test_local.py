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

from whaleid.config import BlendConfig, KnnConfig, LocalConfig
from whaleid.core.atomic import load_npz, save_npz
from whaleid.core.errors import DataError
from whaleid.core.runtime import Runtime
from whaleid.retrieval.chain import ScoringChain
from whaleid.retrieval.fusion import Calibration
from whaleid.retrieval.keypoints import KeypointSet, detect, detect_all
from whaleid.retrieval.learned import match_pairs
from whaleid.retrieval.matching import describe, match_pair, pair_scores
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


def test_pair_scores_equal_a_plain_loop() -> None:
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
    got = pair_scores("sift", kp, kp, queries, rows, cfg, top=cfg.top_pairs, run=Runtime(n_jobs=2))
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


def test_isotonic_calibration_is_monotone_and_averages_each_scores_step_function() -> None:
    rng = np.random.default_rng(0)
    same = rng.random(600) < 0.3
    scores = {
        "cosine": np.where(same, 0.7, 0.5) + rng.normal(0, 0.1, 600),
        "inliers": np.where(same, rng.poisson(12, 600), rng.poisson(2, 600)).astype(float),
    }
    cal = Calibration.fit(scores, same, "isotonic")
    assert cal.kind == "isotonic" and set(cal.knots) == {"cosine", "inliers"}
    grid = {"cosine": np.linspace(0.0, 1.0, 50), "inliers": np.linspace(0.0, 30.0, 50)}
    p = cal(grid)
    assert (np.diff(p) >= -1e-7).all() and ((p >= 0) & (p <= 1)).all()  # both scores rise along the grid
    # by hand: each score's isotonic step function, linear between its knots, then the mean of the two
    x = {"cosine": np.array([0.55]), "inliers": np.array([7.0])}
    want = np.mean([np.interp(x[n][0], *cal.knots[n]) for n in ("cosine", "inliers")])
    assert cal(x)[0] == pytest.approx(want, rel=1e-6)
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(DataError, match="not a whaleid calibration"):
        Calibration.from_dict({"kind": "isotonic", "names": ["cosine"], "knots": {"cosine": [[0.1], []]}})
    with pytest.raises(DataError, match="not a whaleid calibration"):
        Calibration.from_dict({"names": ["cosine"], "weights": [float("nan")], "bias": 0.0})


@pytest.fixture(scope="module")
def textures(tmp_path_factory) -> list[Path]:
    """Three textures and a rotated copy of the first, as RGB files."""
    folder = tmp_path_factory.mktemp("textures")
    paths = []
    for name, img in (("a", texture(0)), ("a_rot", warp(texture(0), 15, 0.9)), ("b", texture(1)), ("c", texture(2))):
        path = folder / f"{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
        paths.append(path)
    return paths


@pytest.mark.parametrize("method", ["aliked", "disk", "xfeat"])
def test_learned_features_match_a_rotated_copy_and_batches_equal_pairs_one_by_one(method: str, textures) -> None:
    cfg = LocalConfig(method=method, max_side=192, max_keypoints=128, early_stop=False, match_batch=8)
    kp = describe(method, textures, None, 0.0, cfg, run=Runtime(progress=False))
    assert kp.descriptors.dtype == np.float16 and kp.sizes.tolist() == [[192, 192]] * 4
    assert (np.diff(kp.offsets) <= 128).all()
    jobs = [(0, 1), (0, 2), (0, 3), (1, 2)]
    batched = match_pairs(kp, kp, jobs, cfg, method=method, run=Runtime(progress=False))
    one_by_one = [match_pairs(kp, kp, [j], cfg, method=method, run=Runtime(progress=False))[0] for j in jobs]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert batched[0] > 2 * max(batched[1:])  # the rotated copy matches; other textures hardly do
    confident = LocalConfig(method=method, max_side=192, max_keypoints=128, learned_score="confidence")
    summed = match_pairs(kp, kp, jobs, confident, method=method, run=Runtime(progress=False))
    assert (summed <= batched + 1e-4).all() and summed[0] > 0  # a confidence is at most 1 a match


def test_a_cascade_scores_the_best_candidates_again_with_a_learned_matcher(textures) -> None:
    cfg = LocalConfig(method="sift", top_pairs=3, refine="aliked", refine_pairs=2, max_side=192, max_keypoints=128)
    run = Runtime(progress=False, n_jobs=1)
    kp = {m: describe(m, textures, None, 0.0, cfg, run=run) for m in cfg.methods}
    names = np.array([p.name for p in textures])
    nn = Neighbours(
        np.array([[0.9, 0.8, 0.7, 0.6]], np.float32),
        np.array([[1, 2, 3, -1]]),
        np.arange(4),
        query_images=names[:1],
        gallery_images=names,
    )
    chain = ScoringChain(KnnConfig(), BlendConfig(knn_weight=1.0), cfg, run=run)
    scores = chain.pair_scores(nn, kp, kp, "match")
    assert list(scores) == ["cosine", "inliers", "refined"]
    assert (scores["inliers"][0, 3:] == 0).all() and (scores["refined"][0, 2:] == 0).all()  # beyond their pairs
    want = match_pairs(kp["aliked"], kp["aliked"], [(0, 1), (0, 2)], cfg, method="aliked", run=run)
    np.testing.assert_allclose(scores["refined"][0, :2], want)


def test_fused_results_keep_each_pairs_raw_match_score_beside_it(textures) -> None:
    # Query a (row 0) against [b, c, a_rot] by cosine: SIFT finds a_rot (a rotated copy) and moves it first.
    cfg = LocalConfig(method="sift", top_pairs=2, max_side=192)
    run = Runtime(progress=False, n_jobs=1)
    kp = {"sift": describe("sift", textures, None, 0.0, cfg, run=run)}
    names = np.array([p.name for p in textures])
    nn = Neighbours(
        np.array([[0.9, 0.8, 0.7]], np.float32),
        np.array([[2, 1, 3]]),  # b, a_rot, c: a_rot is inside top_pairs, c is not
        np.array([0, 0, 1, 2]),
        query_images=names[:1],
        gallery_images=names,
    )
    chain = ScoringChain(KnnConfig(), BlendConfig(knn_weight=1.0), cfg, run=run)
    raw = chain.pair_scores(nn, kp, kp, "match")["inliers"]
    cal = Calibration(("cosine", "inliers"), (1.0, 5.0), 0.0)
    fused, inliers = chain.fuse_with_inliers(nn, cal, kp, kp)
    assert fused.rows[0].tolist() == [1, 2, 3] and raw[0, 1] > 10  # a_rot first: many inliers
    for j, row in enumerate(fused.rows[0]):
        before = nn.rows[0].tolist().index(row)
        want = raw[0, before] if before < cfg.top_pairs else np.nan
        np.testing.assert_equal(inliers[0, j], want)  # each pair's own score, NaN where it was not matched
    assert chain.fuse_with_inliers(nn, None, kp, kp)[1] is None  # no calibration: no fusion, no scores


def test_identify_reports_each_individuals_best_matched_photo() -> None:
    from whaleid.gallery.identify import _best_inliers

    nn = Neighbours(np.array([[0.9, 0.8, 0.7, 0.1]], np.float32), np.array([[5, 6, 7, -1]]), np.arange(10))
    labels = np.array([0, 0, 0, 0, 0, 2, 2, 4, 0, 0])
    got = _best_inliers(nn, np.array([[3.0, 9.0, np.nan, np.nan]]), 0, labels)
    assert got == {2: 9.0}  # individual 2's better photo; 4 was not matched (NaN), the empty slot is skipped
    assert _best_inliers(nn, None, 0, labels) == {}
