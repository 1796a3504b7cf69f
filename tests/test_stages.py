"""Stages run in-process (or as `python -m stages.X`) in a scratch directory: bad input stops them with one
clear line naming the file/key, before any expensive work, and earlier outputs stay as they were."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from whaleid.config import params_from_dict
from whaleid.core.errors import DataError
from whaleid.model.embed import extract_embeddings

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"dir": "data/in"},
    "crop": {"boxes": "data/in/boxes.csv"},
    "detect": {"img_size": 32, "epochs": 1},
    "cv": {"n_folds": 3},
    "model": {"img_size": 32, "embedding_dim": 16},
    "train": {"epochs": 1, "batch_size": 32, "eval_every": 1},
    "runtime": {"num_workers": 0, "n_jobs": 1},
}


@pytest.fixture()
def workdir(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(tiny_dataset, tmp_path / "data/in")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_module(stage: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def run_ok(cwd: Path, *stages: str) -> None:
    """Run stages as DVC does (``python -m stages.X``), each of which must succeed."""
    for stage in stages:
        proc = run_module(stage, cwd)
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_single_image_species_and_individuals_train(workdir: Path) -> None:
    from whaleid.pipeline.members import train_member

    csv = workdir / "data/in/train.csv"
    frame = pd.read_csv(csv, dtype=str)
    frame.loc[0, "species"] = "lonely_dolphin"  # a species with one image
    frame.to_csv(csv, index=False)
    assert (frame["individual_id"].value_counts() == 1).any()  # and individuals seen once
    params = params_from_dict({**TINY, "arcface": {"species_weight": 0.5}})
    run_ok(workdir, "encode", "split", "resize", "weights")
    train_member(params, "fold0")
    labels = yaml.safe_load((workdir / "data/prepared/labels.json").read_text())
    assert "lonely_dolphin" in labels["species"]
    folds = pd.read_csv(workdir / "data/prepared/folds.csv", dtype=str)
    assert len(folds) == len(frame) and set(folds["image"]) == set(frame["image"])
    assert (workdir / "models/fold0/model.pt").stat().st_size > 0


def test_invalid_params_yaml_exits_2_and_keeps_outputs(workdir: Path) -> None:
    assert run_module("encode", workdir).returncode == 0
    before = (workdir / "data/prepared/labels.json").read_bytes()
    (workdir / "params.yaml").write_text("data:\n  dir: data/in\n cv: [unclosed\n")
    proc = run_module("encode", workdir)
    assert proc.returncode == 2
    assert "params.yaml: not valid YAML" in proc.stderr and "line 3" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (workdir / "data/prepared/labels.json").read_bytes() == before


def test_misspelled_key_exits_2_naming_it(workdir: Path) -> None:
    (workdir / "params.yaml").write_text(yaml.safe_dump({**TINY, "train": {"epochz": 3}}))
    proc = run_module("encode", workdir)
    assert proc.returncode == 2 and "Unknown key train.epochz" in proc.stderr and "'epochs'" in proc.stderr


def test_not_a_csv_exits_2_and_keeps_outputs(workdir: Path) -> None:
    assert run_module("encode", workdir).returncode == 0
    before = (workdir / "data/prepared/labels.json").read_bytes()
    (workdir / "data/in/train.csv").write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a CSV \x00\x01")
    proc = run_module("encode", workdir)
    assert proc.returncode == 2 and "train.csv: not a valid UTF-8 CSV" in proc.stderr
    assert (workdir / "data/prepared/labels.json").read_bytes() == before


def test_truncated_jpeg_stops_resize_before_training_and_keeps_outputs(workdir: Path) -> None:
    run_ok(workdir, "resize")
    info = (workdir / "data/resized/info.json").read_bytes()
    victim = sorted((workdir / "data/in/train_images").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:200])
    proc = run_module("resize", workdir)
    assert proc.returncode == 2 and f"{victim.name}: truncated JPEG" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (workdir / "data/resized/info.json").read_bytes() == info  # the earlier output is untouched


def test_boxes_of_another_dataset_or_outside_their_image_stop_detect_or_resize(workdir: Path) -> None:
    boxes = workdir / "data/in/boxes.csv"
    frame = pd.read_csv(boxes, dtype={"image": str})
    frame.assign(image="other_" + frame["image"]).to_csv(boxes, index=False)
    proc = run_module("detect", workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"has boxes for {len(frame)} images, none of them in data/in: boxes for another dataset?" in proc.stderr
    assert not (workdir / "data/detect").exists()  # refused before any image was decoded
    moved = frame.copy()
    moved.loc[2, ["x1", "x2"]] += 10_000  # the generated images are 32 px wide
    moved.to_csv(boxes, index=False)  # train boxes only: the detector would learn from this one
    proc = run_module("detect", workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{frame.loc[2, 'image']}: box (" in proc.stderr and "lies outside the 32 x 32 image" in proc.stderr
    assert not (workdir / "data/detect").exists()  # refused before training
    answers = pd.read_csv(workdir / "data/in/solution_boxes.csv", dtype={"image": str})
    pd.concat([moved, answers]).to_csv(boxes, index=False)  # every photo boxed: passed on, checked by resize
    run_ok(workdir, "detect")
    proc = run_module("resize", workdir)
    assert proc.returncode == 2 and "1 image(s) cannot be read or cropped" in proc.stderr
    assert f"{frame.loc[2, 'image']}: box (" in proc.stderr and "lies outside the 32 x 32 image" in proc.stderr


def test_train_refuses_resized_images_of_another_size(workdir: Path) -> None:
    from whaleid.pipeline.members import train_member

    run_ok(workdir, "encode", "split", "resize")
    bigger = params_from_dict({**TINY, "model": {"img_size": 48}})
    with pytest.raises(DataError, match=r"dvc repro resize"):
        train_member(bigger, "fold0")
    png = params_from_dict({**TINY, "resize": {"format": "png"}})
    with pytest.raises(DataError, match=r"'format': 'png'.*dvc repro resize"):
        train_member(png, "fold0")  # made as bmp, asked for png
    assert not (workdir / "models/fold0/model.pt").exists()


def test_resize_writes_the_format_it_records_and_stages_find_it(workdir: Path) -> None:
    from whaleid.pipeline.artifacts import resized_paths

    (workdir / "params.yaml").write_text(yaml.safe_dump({**TINY, "resize": {"format": "png"}}))
    run_ok(workdir, "encode", "split", "resize")
    names = pd.read_csv(workdir / "data/in/train.csv", dtype=str)["image"][:3]
    paths = resized_paths("train_images", names, "png")
    assert [p.name for p in paths] == [f"{n}.png" for n in names] and all(p.is_file() for p in paths)
    assert not list((workdir / "data/resized/train_images").glob("*.bmp"))
    assert yaml.safe_load((workdir / "data/resized/info.json").read_text())["resize"]["format"] == "png"


def test_flip_tta_is_mean_of_normalised_embeddings(tiny_dataset: Path) -> None:
    from whaleid.config import ArcFaceConfig, ModelConfig
    from whaleid.data.images import ImageDataset
    from whaleid.model.augment import model_input
    from whaleid.model.network import WhaleNet
    from whaleid.model.transforms import AsUint8

    torch.manual_seed(0)
    net = WhaleNet(ModelConfig(img_size=32, embedding_dim=8), ArcFaceConfig(), 4).eval()
    paths = sorted((tiny_dataset / "train_images").iterdir())[:6]
    got = extract_embeddings(net, paths, 32, batch_size=4, device=torch.device("cpu"), progress=False, flip_tta=True)
    x = model_input(
        torch.stack([ImageDataset(paths, AsUint8(32))[i][0] for i in range(len(paths))]), torch.device("cpu")
    )
    with torch.no_grad():
        a = torch.nn.functional.normalize(net.embed(x), dim=1)
        b = torch.nn.functional.normalize(net.embed(torch.flip(x, dims=[3])), dim=1)
    want = torch.nn.functional.normalize(a + b, dim=1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    plain = extract_embeddings(net, paths, 32, batch_size=4, device=torch.device("cpu"), progress=False)
    np.testing.assert_allclose(plain, a.numpy(), atol=1e-5)


def test_combined_embeddings_cosine_is_mean_of_members() -> None:
    from whaleid.retrieval.search import combine

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((5, 8)) for _ in range(2))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    c = combine([a, b])
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(c @ c[0], ((a @ a[0]) + (b @ b[0])) / 2, rtol=1e-5)
    np.testing.assert_array_equal(combine([a]), a.astype(np.float32))  # one model: its embeddings unchanged


def _fake_embeddings(workdir: Path, name: str, seed: int, n_train: int = 12, n_test: int = 5, d: int = 4) -> dict:
    """Unit-length embeddings of model ``name`` where the embed stage writes them."""
    from whaleid.core.atomic import save_npz

    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        e = rng.standard_normal((n, d)).astype(np.float32)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        arrays = {
            "embeddings": e,
            "images": np.asarray([f"{split}{i}.jpg" for i in range(n)]),
            "labels": np.arange(n) % 3 if split == "train" else np.full(n, -1),
            "folds": np.arange(n) % 3,
        }
        save_npz(workdir / f"data/embeddings/{name}/{split}.npz", **arrays)
        out[split] = arrays
    return out


def test_ensemble_stage_only_combines_member_embeddings(workdir: Path) -> None:
    from whaleid.core.atomic import load_npz
    from whaleid.retrieval.search import combine

    emb = {n: _fake_embeddings(workdir, n, seed) for seed, n in enumerate(["fold0", "fold2", "full"])}
    (workdir / "params.yaml").write_text(yaml.safe_dump({**TINY, "ensemble": {"members": ["fold2", "full"]}}))
    run_ok(workdir, "ensemble")
    gallery, test = load_npz(workdir / "data/final/gallery.npz"), load_npz(workdir / "data/final/test.npz")
    for got, split in ((gallery, "train"), (test, "test")):
        want = combine([emb[n][split]["embeddings"] for n in ("fold0", "fold2", "full")])
        np.testing.assert_array_equal(got["embeddings"], want)
        np.testing.assert_array_equal(got["images"], emb["fold0"][split]["images"])
    assert not (workdir / "models").exists()  # nothing was trained here
    # fold_model false: the members alone; none: the fold model's own embeddings, unchanged.
    (workdir / "params.yaml").write_text(
        yaml.safe_dump({**TINY, "ensemble": {"members": ["full"], "fold_model": False}})
    )
    run_ok(workdir, "ensemble")
    np.testing.assert_array_equal(
        load_npz(workdir / "data/final/test.npz")["embeddings"], emb["full"]["test"]["embeddings"]
    )
    (workdir / "params.yaml").write_text(yaml.safe_dump(TINY))
    run_ok(workdir, "ensemble")
    np.testing.assert_array_equal(
        load_npz(workdir / "data/final/gallery.npz")["embeddings"], emb["fold0"]["train"]["embeddings"]
    )


def test_model_stages_take_one_model_name(workdir: Path) -> None:
    for args in (("fold0", "fold1"), ("best",)):  # two names; not a model name (each start imports torch: ~8 s)
        proc = run_module("embed", workdir, *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "foldN" in proc.stderr


def test_missing_stage_input_exits_2_naming_it(workdir: Path) -> None:
    proc = run_module("knn", workdir)
    assert proc.returncode == 2 and "data/embeddings/fold0/train.npz is missing" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_score_validates_the_submission_before_scoring(workdir: Path) -> None:
    run_ok(workdir, "encode")
    solution = pd.read_csv(workdir / "data/in/solution.csv", dtype=str)
    (workdir / "submissions").mkdir()
    short = pd.DataFrame({"image": solution["image"][:10], "predictions": "new_individual a b c d"})
    short.to_csv(workdir / "submissions/submission.csv", index=False)
    proc = run_module("score", workdir)
    assert proc.returncode == 2 and "10 rows for 60 test images" in proc.stderr, proc.stderr
    assert not (workdir / "metrics/lb.json").exists()


def test_read_only_output_folder_is_one_line_exit_2(workdir: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (workdir / "data/prepared").mkdir(parents=True)
    (workdir / "data/prepared").chmod(0o555)
    try:
        proc = run_module("encode", workdir)
    finally:
        (workdir / "data/prepared").chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "cannot write" in proc.stderr and "Permission denied" in proc.stderr


@pytest.mark.parametrize(
    "code,hint", [(errno.ENOSPC, "Free disk space"), (errno.EROFS, "read-only"), (errno.EACCES, "writable")]
)
def test_disk_errors_are_one_line_exit_2(code: int, hint: str, capfd: pytest.CaptureFixture) -> None:
    from whaleid.pipeline.stage import run_stage

    def body(params: object) -> None:
        raise OSError(code, os.strerror(code), "data/resized/train_images/x.bmp")

    with pytest.raises(SystemExit) as done:
        run_stage("resize", body)
    err = capfd.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err
    line = [x for x in err.splitlines() if "stage failed" in x]
    assert len(line) == 1 and "cannot write data/resized/train_images/x.bmp" in line[0] and hint in line[0], err


def test_other_os_errors_are_not_disguised() -> None:
    from whaleid.pipeline.stage import run_stage

    def body(params: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        run_stage("resize", body)


@pytest.mark.parametrize("key", ["model", "detect"])
def test_a_backbone_typo_stops_the_first_stage_naming_the_key_and_close_names(workdir: Path, key: str) -> None:
    params = {**TINY, key: {**TINY.get(key, {}), "backbone": "test_resnt"}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_module("encode", workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{key}.backbone: unknown timm model 'test_resnt'. Close names: test_resnet" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (workdir / "data/prepared/labels.json").exists()
    if key == "model":  # and with the name right, the same stage runs
        (workdir / "params.yaml").write_text(yaml.safe_dump(TINY))
        run_ok(workdir, "encode")
        assert (workdir / "data/prepared/labels.json").exists()
