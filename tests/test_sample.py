"""The generated dataset: Kaggle layout and schema, determinism, long tail and new-individual share."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import zeta

from tests.conftest import TINY, tiny_config
from whaleid.config import SampleConfig
from whaleid.core.runtime import Runtime
from whaleid.data.images import read_image
from whaleid.data.layout import NEW_INDIVIDUAL, load_dataset
from whaleid.data.sample import plan_dataset, write_dataset


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_schema(tiny_dataset: Path) -> None:
    names = {p.name for p in tiny_dataset.iterdir()}
    assert names == {
        "train.csv",
        "train_images",
        "test_images",
        "sample_submission.csv",
        "solution.csv",
        "boxes.csv",
        "solution_boxes.csv",
    }
    train = pd.read_csv(tiny_dataset / "train.csv", dtype=str)
    assert list(train.columns) == ["image", "species", "individual_id"]
    assert len(train) == TINY.n_train
    assert all(re.fullmatch(r"[0-9a-f]{14}\.jpg", n) for n in train["image"])
    assert all(re.fullmatch(r"[0-9a-f]{12}", n) for n in train["individual_id"])
    assert train["species"].nunique() <= TINY.n_species
    # An individual always has one species.
    assert (train.groupby("individual_id")["species"].nunique() == 1).all()
    sub = pd.read_csv(tiny_dataset / "sample_submission.csv", dtype=str)
    assert list(sub.columns) == ["image", "predictions"]
    assert len(sub) == TINY.n_test and sub["image"].is_unique
    assert sorted(sub["image"]) == sorted(p.name for p in (tiny_dataset / "test_images").iterdir())
    assert all(len(set(p.split())) == 5 for p in sub["predictions"])
    sol = pd.read_csv(tiny_dataset / "solution.csv", dtype=str)
    assert list(sol.columns) == ["image", "individual_id"] and list(sol["image"]) == list(sub["image"])
    known = set(train["individual_id"])
    assert all(i == NEW_INDIVIDUAL or i in known for i in sol["individual_id"])
    boxes = pd.read_csv(tiny_dataset / "boxes.csv")  # train photos only, as real annotations come
    assert sorted(boxes["image"]) == sorted(train["image"])
    test_boxes = pd.read_csv(tiny_dataset / "solution_boxes.csv")  # the answer key that scores a detector
    assert list(test_boxes["image"]) == list(sub["image"])
    for frame in (boxes, test_boxes):
        assert ((frame.x1 <= frame.x2) & (frame.y1 <= frame.y2) & (frame.x2 < TINY.img_size)).all()
    img = read_image(tiny_dataset / "train_images" / train["image"][0])
    assert img.shape == (TINY.img_size, TINY.img_size, 3) and img.dtype == np.uint8
    load_dataset(tiny_dataset)  # passes our own validation


def test_same_params_give_identical_bytes(tiny_dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_dataset(TINY, again, run=Runtime(n_jobs=2, progress=False))  # another worker count too
    assert _digest(again) == _digest(tiny_dataset)


def test_other_seed_gives_other_data(tmp_path: Path) -> None:
    a = plan_dataset(tiny_config(seed=1)).train
    b = plan_dataset(tiny_config(seed=2)).train
    assert set(a["image"]).isdisjoint(b["image"])


def test_long_tail_matches_zipf() -> None:
    cfg = SampleConfig(n_train=30000, n_test=5000, tail_exponent=2.0, max_images_per_id=400, seed=3)
    plan = plan_dataset(cfg)
    counts = plan.train["individual_id"].value_counts()
    singles = float((counts == 1).mean())
    assert abs(singles - 1 / zeta(2.0)) < 0.03, singles  # ~0.61 (real competition: 0.59)
    assert counts.max() > 50  # a few individuals photographed many times
    assert len(plan.train) == cfg.n_train


def test_new_share_of_test() -> None:
    cfg = SampleConfig(n_train=5000, n_test=2000, new_share=0.25, seed=5)
    plan = plan_dataset(cfg)
    share = plan.test["_new"].mean()
    assert abs(share - 0.25) < 0.002
    known = set(plan.train["individual_id"])
    new_ids = set(plan.test.loc[plan.test["_new"], "individual_id"])
    assert new_ids.isdisjoint(known)
    assert set(plan.test.loc[~plan.test["_new"], "individual_id"]) <= known


def test_photos_of_one_individual_differ(tiny_dataset: Path) -> None:
    train = pd.read_csv(tiny_dataset / "train.csv")
    top = train["individual_id"].value_counts().index[0]
    names = train.loc[train["individual_id"] == top, "image"].tolist()[:2]
    a, b = (read_image(tiny_dataset / "train_images" / n).astype(int) for n in names)
    assert np.abs(a - b).mean() > 5


def test_species_alone_cannot_identify() -> None:
    """Species-oracle upper bound on the default set: knowing each test image's true species and predicting
    new_individual + that species' four most frequent individuals is still far from MAP@5 1.0."""
    from whaleid.rule.metrics import map_at_5

    plan = plan_dataset(SampleConfig())
    top = plan.train.groupby("species")["individual_id"].agg(lambda s: s.value_counts().index[:4].tolist())
    preds = [[NEW_INDIVIDUAL, *top[s]] for s in plan.test["species"]]
    truth = np.where(plan.test["_new"], NEW_INDIVIDUAL, plan.test["individual_id"])
    score = map_at_5(preds, list(truth))
    assert score < 0.45, score


def _fin_boxes(cfg: SampleConfig, n: int = 150) -> np.ndarray:
    from whaleid.data.scene import Scene, render_photo

    plan = plan_dataset(cfg)
    out = []
    for i in range(n):
        ind = plan.individuals[i % len(plan.individuals)]
        rng, extra = np.random.default_rng([cfg.seed, 7, i]), np.random.default_rng([cfg.seed, 8, i])
        out.append(
            render_photo(ind, cfg.img_size, rng, mirror_prob=cfg.mirror_prob, scene=Scene.of(cfg), extra=extra)[1]
        )
    return np.array(out, dtype=float) / cfg.img_size


def test_wild_scene_draws_small_fins_anywhere() -> None:
    """The default scene (the fin small, anywhere, among clutter) against the easy one it replaced (the fin large
    and central): fin sizes and places, measured on the rendered boxes."""
    wild = _fin_boxes(SampleConfig(img_size=96))
    easy = _fin_boxes(
        SampleConfig(
            img_size=96,
            subject_min=0.55,
            subject_max=0.85,
            off_centre=0.0,
            clutter=0,
            occlusion=0.0,
            mark_contrast_min=1.0,
        )
    )
    width = lambda b: b[:, 2] - b[:, 0]  # noqa: E731 - the base plus the fin's sweep: a little over the base
    centre_x = lambda b: (b[:, 0] + b[:, 2]) / 2  # noqa: E731
    assert np.median(width(wild)) < 0.6 * np.median(width(easy))
    assert np.median(width(wild)) < 0.45
    area = lambda b: width(b) * (b[:, 3] - b[:, 1])  # noqa: E731
    assert np.median(area(wild)) < 0.15 < np.median(area(easy))
    assert centre_x(wild).std() > 1.5 * centre_x(easy).std()


def test_scene_knobs_change_only_their_own_draws() -> None:
    """Clutter, occlusion and faint markings draw from their own random stream: the fin's pose and box stay the
    same photo for photo, and the photo changes."""
    from whaleid.data.scene import Scene, render_photo

    cfg = SampleConfig(img_size=64)
    ind = plan_dataset(cfg).individuals[0]
    plain = Scene(subject_min=0.3, subject_max=0.5, off_centre=1.0)
    busy = Scene(subject_min=0.3, subject_max=0.5, off_centre=1.0, clutter=8, occlusion=1.0, mark_contrast_min=0.2)
    changed = 0
    for i in range(20):
        a = render_photo(
            ind, 64, np.random.default_rng(i), mirror_prob=0.15, scene=plain, extra=np.random.default_rng(100 + i)
        )
        b = render_photo(
            ind, 64, np.random.default_rng(i), mirror_prob=0.15, scene=busy, extra=np.random.default_rng(100 + i)
        )
        assert a[1] == b[1]
        changed += int(np.abs(a[0].astype(int) - b[0].astype(int)).mean() > 1)
    assert changed >= 18


def test_easy_scene_draws_the_old_default_byte_for_byte(tmp_path: Path) -> None:
    """The scene params set to the old easy values give the dataset the generator drew before it had them. The
    digest was computed by the previous whaleid/data/sample.py (commit a0c0137) on this config."""
    cfg = SampleConfig(
        n_train=40,
        n_test=12,
        n_species=3,
        img_size=32,
        seed=7,
        subject_min=0.55,
        subject_max=0.85,
        off_centre=0.0,
        clutter=0,
        occlusion=0.0,
        mark_contrast_min=1.0,
        test_boxes=True,
    )
    write_dataset(cfg, tmp_path / "easy", run=Runtime(n_jobs=1, progress=False))
    h = hashlib.sha256()
    for p in sorted((tmp_path / "easy").rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    assert h.hexdigest() == "3235601182407ba332156ba36662a33e7793e84b75c87cf91688d74081e44a74"
