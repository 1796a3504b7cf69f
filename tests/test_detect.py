"""The box detector (whaleid.model.boxnet, stage `detect`) against references: IoU by counting pixels, boxes that must
follow their photo through augmentation, a detector that must beat the mean box on photos it never saw, and the
stage's choice between the CSV's boxes, a detector and whole photos."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from whaleid.config import DetectConfig
from whaleid.core.errors import ConfigError
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import box_iou, iou_summary, normalise, read_boxes, to_pixels
from whaleid.model.boxnet import _augment, holdout_split, load_detector, predict, save_detector, train_detector
from whaleid.pipeline.detect import decide


def _pixel_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """IoU by painting both boxes on a grid and counting cells (integer boxes, x2/y2 exclusive)."""
    grid_a, grid_b = np.zeros((40, 40), bool), np.zeros((40, 40), bool)
    grid_a[a[1] : a[3], a[0] : a[2]] = True
    grid_b[b[1] : b[3], b[0] : b[2]] = True
    union = (grid_a | grid_b).sum()
    return float((grid_a & grid_b).sum() / union) if union else 0.0


def test_box_iou_matches_pixel_counting() -> None:
    assert box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2]])[0] == pytest.approx(1 / 3)  # by hand: 2 / (4 + 4 - 2)
    assert box_iou([[0, 0, 2, 2]], [[5, 5, 6, 6]])[0] == 0.0
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = np.sort(rng.integers(0, 40, (2, 2)), axis=0).T.ravel()[[0, 2, 1, 3]]
        b = np.sort(rng.integers(0, 40, (2, 2)), axis=0).T.ravel()[[0, 2, 1, 3]]
        assert box_iou([a], [b])[0] == pytest.approx(_pixel_iou(tuple(a), tuple(b)))
    summary = iou_summary(np.array([[0, 0, 2, 2], [0, 0, 2, 2]]), np.array([[0, 0, 2, 2], [1, 0, 3, 2]]))
    assert summary == {"iou": pytest.approx((1 + 1 / 3) / 2, abs=1e-4), "iou50": 0.5, "iou75": 0.5}


def test_normalise_and_back() -> None:
    sizes = np.array([[200, 100], [50, 80]])
    boxes = [(20.0, 10.0, 120.0, 90.0), (0.0, 8.0, 25.0, 80.0)]
    norm = normalise(boxes, sizes)
    assert norm[0].tolist() == pytest.approx([0.1, 0.1, 0.6, 0.9])
    assert to_pixels(norm, sizes) == pytest.approx(np.array(boxes))


def _squares(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy photos, each with one bright rectangle of random place and shape; its normalised box."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    boxes = []
    for img in images:
        w, h = rng.integers(size // 6, size // 2, 2)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        img[y : y + h, x : x + w] = rng.integers(180, 255, 3)
        boxes.append((x / size, y / size, (x + w) / size, (y + h) / size))
    return images, np.array(boxes)


def test_augmentation_moves_the_box_with_the_photo() -> None:
    images, boxes = _squares(32, 64, seed=1)
    images[:] = np.where(images > 100, 255, 0).astype(np.uint8)  # a white rectangle on black
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    out, moved = _augment(x, torch.from_numpy(boxes).float(), torch.Generator().manual_seed(3))
    ious = []
    for img, box in zip(out.numpy(), moved.numpy(), strict=True):
        mask = img.mean(0) > img.mean() + 0.5 * img.std()  # the rectangle, whatever brightness and contrast
        ys, xs = np.nonzero(mask)
        seen = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 64
        ious.append(box_iou([seen], [box])[0])
    assert np.median(ious) > 0.85 and min(ious) > 0.6


def test_holdout_split_is_a_seeded_partition() -> None:
    fit, held = holdout_split(100, 0.1, seed=5)
    assert len(held) == 10 and len(fit) == 90 and not set(fit) & set(held)
    assert sorted([*fit, *held]) == list(range(100))
    again = holdout_split(100, 0.1, seed=5)
    assert (again[1] == held).all() and (holdout_split(100, 0.1, seed=6)[1] != held).any()
    assert len(holdout_split(12, 0.01, 0)[1]) == 1 and len(holdout_split(5, 0.1, 0)[1]) == 0
    assert len(holdout_split(50, 0.0, 0)[1]) == 0


def test_decide() -> None:
    train, test = [f"t{i}" for i in range(30)], ["q1", "q2"]
    train_only = {n: (0, 0, 1, 1) for n in train}
    everything = {**train_only, "q1": (0, 0, 1, 1), "q2": (0, 0, 1, 1)}
    assert decide("auto", train_only, train, test)[0] is True
    assert decide("auto", everything, train, test) == (False, "the boxes cover every test photo: used as they are")
    assert decide("auto", None, train, test)[0] is False
    assert decide("auto", dict(list(train_only.items())[:5]), train, test)[0] is False  # too few to learn from
    assert decide("always", everything, train, test)[0] is True
    assert decide("never", train_only, train, test)[0] is False
    with pytest.raises(ConfigError, match="detect.use is always, but the boxes"):
        decide("always", None, train, test)


def test_detector_beats_the_mean_box_on_unseen_photos(tmp_path: Path) -> None:
    images, boxes = _squares(400, 64, seed=2)
    cfg = DetectConfig(img_size=64, epochs=6, batch_size=32, lr=0.003)
    model, losses = train_detector(images[:320], boxes[:320], cfg, device=torch.device("cpu"), progress=False)
    assert losses[-1] < losses[0]
    got = box_iou(predict(model, images[320:], torch.device("cpu")), boxes[320:]).mean()
    mean_box = box_iou(np.tile(boxes[:320].mean(0), (80, 1)), boxes[320:]).mean()
    assert got > mean_box + 0.25, (got, mean_box)
    save_detector(tmp_path / "d.pt", model, cfg)  # and it loads back safely (weights_only), predicting the same
    again, size = load_detector(tmp_path / "d.pt", torch.device("cpu"))
    assert size == 64
    assert predict(again, images[320:], torch.device("cpu")) == pytest.approx(predict(model, images[320:], "cpu"))


STAGE_PARAMS = {
    "data": {"dir": "data/in"},
    "detect": {"img_size": 32, "epochs": 1, "holdout": 0.2},
    "runtime": {"num_workers": 0, "n_jobs": 1},
}


@pytest.fixture()
def stage_dir(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(tiny_dataset, tmp_path / "data/in")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(stage_dir: Path, params: dict) -> dict:
    from stages.detect import main
    from whaleid.config import params_from_dict
    from whaleid.core.atomic import read_json

    (stage_dir / "params.yaml").write_text(yaml.safe_dump(params))
    main(params_from_dict(params))
    return read_json(stage_dir / "metrics/detect.json")


def test_stage_trains_on_train_boxes_and_boxes_every_photo(stage_dir: Path) -> None:
    metrics = _run(stage_dir, STAGE_PARAMS)
    truth = read_boxes(stage_dir / "data/in/boxes.csv")
    out = read_boxes(stage_dir / "data/detect/boxes.csv")
    train = pd.read_csv(stage_dir / "data/in/train.csv")["image"]
    test = sorted(p.name for p in (stage_dir / "data/in/test_images").iterdir())
    assert set(out) == {*train, *test}
    assert all(out[n] == truth[n] for n in train)  # train_crops: truth
    assert metrics["detector"] and metrics["holdout"]["photos"] == 32 and metrics["test"]["photos"] == len(test)
    answers = read_boxes(stage_dir / "data/in/solution_boxes.csv")  # the reported test IoU is the real one
    sizes = np.array([cv2.imread(str(stage_dir / "data/in/test_images" / n)).shape[1::-1] for n in test])
    want = box_iou(normalise([out[n] for n in test], sizes), normalise([answers[n] for n in test], sizes)).mean()
    assert metrics["test"]["iou"] == pytest.approx(want, abs=2e-3)
    assert (stage_dir / "data/detect/model.pt").is_file()
    assert not (stage_dir / ".whaleid_cache/detect").exists()  # the resume cache is gone once the stage succeeds

    queries = read_boxes(stage_dir / "data/detect/query_boxes.csv")  # valid_crops: predicted (the default)
    assert set(queries) == set(train)

    predicted = _run(stage_dir, {**STAGE_PARAMS, "detect": {**STAGE_PARAMS["detect"], "train_crops": "predicted"}})
    out = read_boxes(stage_dir / "data/detect/boxes.csv")
    assert predicted["holdout"] == metrics["holdout"]  # the same detector (seeded) ...
    assert sum(out[n] != truth[n] for n in train) > 0.9 * len(train)  # ... now boxing the train photos too
    assert all(queries[n] == out[n] for n in train)  # the validation queries' boxes were the detector's
    assert not (stage_dir / "data/detect/query_boxes.csv").exists()  # train photos are cropped as queries are

    _run(stage_dir, {**STAGE_PARAMS, "detect": {**STAGE_PARAMS["detect"], "valid_crops": "truth"}})
    assert not (stage_dir / "data/detect/query_boxes.csv").exists()


def test_stage_passes_complete_boxes_on_and_none_means_whole_photos(stage_dir: Path) -> None:
    both = pd.concat(
        [pd.read_csv(stage_dir / "data/in/boxes.csv"), pd.read_csv(stage_dir / "data/in/solution_boxes.csv")]
    )
    both.to_csv(stage_dir / "all.csv", index=False)
    metrics = _run(stage_dir, {**STAGE_PARAMS, "crop": {"boxes": "all.csv"}})
    assert metrics == {"detector": False}
    assert read_boxes(stage_dir / "data/detect/boxes.csv") == read_boxes(stage_dir / "all.csv")
    assert not (stage_dir / "data/detect/model.pt").exists()
    assert _run(stage_dir, {**STAGE_PARAMS, "crop": {"boxes": None}}) == {"detector": False}
    assert not (stage_dir / "data/detect/boxes.csv").exists()
    (stage_dir / "data/in/boxes.csv").unlink()  # crop.boxes auto, and the dataset has none
    assert _run(stage_dir, STAGE_PARAMS) == {"detector": False}
    assert not (stage_dir / "data/detect/boxes.csv").exists()


def test_unknown_backbone_stops_the_stage_before_any_photo_is_decoded(stage_dir: Path) -> None:
    bad = {**STAGE_PARAMS, "detect": {**STAGE_PARAMS["detect"], "backbone": "test_resnt"}}
    with pytest.raises(ConfigError, match="detect.backbone: unknown timm model 'test_resnt'. Close names: test_resnet"):
        _run(stage_dir, bad)
    assert not (stage_dir / ".whaleid_cache/detect").exists() and not (stage_dir / "data/detect").exists()


def test_decoded_photos_are_cached_so_a_rerun_does_not_decode_again(tiny_dataset: Path, tmp_path: Path) -> None:
    import os

    from whaleid.model.boxnet import load_photos

    photos = tmp_path / "photos"
    shutil.copytree(tiny_dataset / "train_images", photos)
    paths = sorted(photos.iterdir())[:70]  # two chunks
    first = load_photos(paths, 24, run=Runtime(max_megapixels=100, n_jobs=1, progress=False), cache=tmp_path / "cache")
    for p in paths:  # unreadable now, with the same size and mtime: only the cache can give the photos back
        st = p.stat()
        p.write_bytes(b"\0" * st.st_size)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = load_photos(paths, 24, run=Runtime(max_megapixels=100, n_jobs=1, progress=False), cache=tmp_path / "cache")
    assert (again.images == first.images).all() and (again.sizes == first.sizes).all()
    assert first.images.shape == (70, 24, 24, 3) and (first.sizes == 32).all()


def test_validation_queries_are_cropped_by_the_detector_as_test_photos_are(stage_dir: Path) -> None:
    from stages.resize import main as resize
    from whaleid.config import params_from_dict
    from whaleid.data.images import read_image
    from whaleid.data.resize import prepare_image, resized_name
    from whaleid.pipeline.scoring import validation_photos

    params = params_from_dict({**STAGE_PARAMS, "model": {"img_size": 32}})
    _run(stage_dir, STAGE_PARAMS)
    resize(params)
    queries = read_boxes(stage_dir / "data/detect/query_boxes.csv")
    train = pd.read_csv(stage_dir / "data/in/train.csv")["image"].tolist()
    folder = stage_dir / "data/resized"
    assert sorted(p.name for p in (folder / "query_images").iterdir()) == sorted(
        p.name for p in (folder / "train_images").iterdir()
    )
    name = train[0]
    want = prepare_image(read_image(stage_dir / "data/in/train_images" / name), 32, queries[name], params.crop.margin)
    got = cv2.imread(str(folder / "query_images" / resized_name(name)))
    np.testing.assert_array_equal(cv2.cvtColor(got, cv2.COLOR_BGR2RGB), want)

    # The embed stage's queries replace a fold's validation rows, and only those; the gallery keeps its own.
    rng = np.random.default_rng(0)
    n = 12
    arrays = {
        "embeddings": rng.normal(size=(n, 4)),
        "queries": rng.normal(size=(n, 4)),
        "images": np.array([f"{i}.jpg" for i in range(n)]),
        "labels": np.arange(n) % 4,
        "folds": np.arange(n) % 3,
        "held": np.zeros((n, 3), bool),
    }
    query, gallery = validation_photos(arrays, 1)
    np.testing.assert_array_equal(query.embeddings, arrays["queries"][[1, 4, 7, 10]])
    np.testing.assert_array_equal(query.parts[0], arrays["queries"][[1, 4, 7, 10]])
    np.testing.assert_array_equal(gallery.embeddings, arrays["embeddings"][arrays["folds"] != 1])
    plain, _ = validation_photos({k: v for k, v in arrays.items() if k != "queries"}, 1)
    np.testing.assert_array_equal(plain.embeddings, arrays["embeddings"][[1, 4, 7, 10]])


def test_a_bad_detector_file_is_one_line_of_our_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    import torch

    from whaleid.core.errors import DataError
    from whaleid.model.boxnet import load_detector

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    with (tmp_path / "evil.pt").open("wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh)
    torch.save({"state_dict": {}}, tmp_path / "keys.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "keys.pt").read_bytes()[:40])
    for name, message in (
        ("evil.pt", "refused: it holds Python objects"),
        ("keys.pt", "not a box detector saved by stage detect (KeyError"),
        ("cut.pt", "not a readable torch file"),
    ):
        with pytest.raises(DataError, match=f"{name}.*{re.escape(message)}") as refused:
            load_detector(tmp_path / name, torch.device("cpu"))
        assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)
    assert "must never run" not in capsys.readouterr().out
