"""The gallery (stage `gallery`, `whaleid identify`, `whaleid gallery add/remove`) on a tiny pipeline run.

References: the submission itself (identifying the test photos must give submission.csv's rows), and the gallery
the stage built from scratch (removing individuals and adding their photos back must rank every query the same).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tinyrepo import copy_repo

from whaleid.core.runtime import Runtime

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(reproduced: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    repo = tmp_path_factory.mktemp("gallery") / "repo"
    return repo, copy_repo(reproduced[0], repo)


def whaleid(args: list[str], repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "whaleid.cli.main", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def identify_gives_the_submission(root: Path, env: dict[str, str]) -> pd.Series:
    """`whaleid identify` on the test photos gives submission.csv's rows; returns those rows."""
    proc = whaleid(["identify", "data/sample/test_images", "--format", "csv", "--out", "ident.csv"], root, env)
    assert proc.returncode == 0, proc.stderr
    got = pd.read_csv(root / "ident.csv", dtype=str).set_index("image")["predictions"]
    want = pd.read_csv(root / "submissions/submission.csv", dtype=str).set_index("image")["predictions"]
    assert len(got) == len(want) == 60
    assert (got[want.index] == want).all(), (got[want.index] != want).sum()
    return want


def test_identify_gives_the_submission_and_skips_unreadable_photos(repo: tuple[Path, dict[str, str]]) -> None:
    root, env = repo
    # No --boxes: the test photos have none (boxes.csv covers train photos), so the gallery's detector boxes them,
    # as stage detect did for the submission.
    want = identify_gives_the_submission(root, env)

    # The same from the exported ONNX file, which identify checks against the gallery's model.
    proc = whaleid(["export", "models/fold0/model.pt", "--format", "onnx", "--out", "fold0.onnx"], root, env)
    assert proc.returncode == 0, proc.stderr
    proc = whaleid(["identify", "data/sample/test_images", "--format", "csv", "--exported", "fold0.onnx"], root, env)
    assert proc.returncode == 0, proc.stderr
    onnx_rows = pd.read_csv(__import__("io").StringIO(proc.stdout), dtype=str).set_index("image")["predictions"]
    assert (onnx_rows[want.index] == want).all(), (onnx_rows[want.index] != want).sum()
    proc = whaleid(
        ["export", "models/fold0/model.pt", "--format", "onnx", "--out", "flip.onnx", "--flip-tta"], root, env
    )
    proc = whaleid(["identify", "data/sample/test_images", "--exported", "flip.onnx"], root, env)
    assert proc.returncode == 2 and "exported with flip_tta True" in proc.stderr

    photos = root / "some"
    photos.mkdir()
    for p in sorted((root / "data/sample/test_images").iterdir())[:3]:
        shutil.copy(p, photos / p.name)
    (photos / "junk.jpg").write_bytes(b"not a photo")
    proc = whaleid(["identify", str(photos), "--format", "json", "--top-k", "3"], root, env)
    assert proc.returncode == 1, proc.stderr  # a photo skipped: exit 1 with the count, unless --keep-going
    assert "skipped:" in proc.stderr and "junk.jpg" in proc.stderr and "1 of 4 photo(s) skipped" in proc.stderr
    proc = whaleid(["identify", str(photos), "--format", "json", "--top-k", "8", "--keep-going"], root, env)
    assert proc.returncode == 0, proc.stderr
    import json

    rows = json.loads(proc.stdout)
    rule = json.loads((root / "models/rule.json").read_text())
    assert [r["image"] for r in rows] == sorted(p.name for p in photos.iterdir() if p.name != "junk.jpg")
    for r in rows:
        found = r["candidates"]  # --top-k 8 honoured: eight individuals, best first, with their species
        assert len(found) == 8 and [c["score"] for c in found] == sorted((c["score"] for c in found), reverse=True)
        assert set(found[0]) == {"individual_id", "score", "species", "local_inliers"}
        inliers = [c["local_inliers"] for c in found]  # SIFT's inliers of its best matched photo, or null
        assert all(v is None or v >= 0 for v in inliers) and inliers[0] is not None  # the best one was matched
        known = [p for p in r["predictions"].split() if p != "new_individual"]
        assert known == [c["individual_id"] for c in found][: len(known)] and len(r["predictions"].split()) == 5
        assert r["threshold"] == rule["threshold"] and r["crop"] == "detector" and len(r["box"]) == 4
    assert not list(root.glob("*.json"))  # nothing written unless asked


def ranking(gallery: object, queries: list[Path]) -> tuple[list[list[str]], np.ndarray]:
    """Individuals in rank order (the rule's candidates) and their scores for each query."""
    import tempfile

    from whaleid.gallery.embedding import embed_photos
    from whaleid.rule.candidates import candidates

    with tempfile.TemporaryDirectory() as tmp:
        parts, kp = embed_photos(
            gallery, queries, boxes=None, workdir=Path(tmp), run=Runtime(device="cpu", progress=False, n_jobs=1)
        )
    nn = gallery.score(parts, [q.name for q in queries], kp, run=Runtime(n_jobs=1))
    labels, scores = candidates(nn.sims, nn.rows, nn.gallery_labels)
    names = np.asarray(gallery.individuals["individual_id"], dtype=object)
    return [list(names[row]) for row in labels], scores


def test_added_photos_rank_as_in_a_gallery_built_from_scratch(repo: tuple[Path, dict[str, str]], monkeypatch) -> None:
    from whaleid.core.errors import DataError
    from whaleid.data.boxes import read_boxes
    from whaleid.gallery.folder import Gallery, remove_photos
    from whaleid.gallery.identify import add_photos

    root, _ = repo
    monkeypatch.chdir(root)
    full = Gallery.load("gallery")
    counts = full.photos["individual_id"].value_counts()
    gone = list(counts.index[:2])  # the two individuals with most photos
    queries = sorted((root / "data/sample/test_images").iterdir())[:20]
    trimmed = remove_photos(full, individuals=gone)
    assert set(trimmed.photos["individual_id"]).isdisjoint(gone) and trimmed.index.ntotal == len(trimmed.photos)
    rows = full.photos[full.photos["individual_id"].isin(gone)]
    boxes = read_boxes("data/sample/boxes.csv")  # the pipeline cropped the gallery's photos to them
    back = add_photos(
        trimmed,
        [root / "data/sample/train_images" / n for n in rows["image"]],
        list(rows["individual_id"]),
        boxes=boxes,
        run=Runtime(progress=False, n_jobs=1),
    )
    back.save(root / "grown")
    grown = Gallery.load(root / "grown")
    assert len(grown.photos) == len(full.photos) and grown.index.ntotal == len(full.photos)
    want, want_scores = ranking(full, queries)
    got, got_scores = ranking(grown, queries)
    assert got == want
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-4)

    # A photo already in the gallery is refused (by name, and by content under another name); nothing is written.
    first = root / "data/sample/train_images" / full.photos["image"].iloc[0]
    with pytest.raises(DataError, match="already has this name"):
        add_photos(full, [first], ["someone"], run=Runtime(progress=False, n_jobs=1))
    renamed = root / "renamed.jpg"
    shutil.copy(first, renamed)
    with pytest.raises(DataError, match=rf"already in the gallery as {full.photos['image'].iloc[0]}"):
        add_photos(full, [renamed], ["someone"], run=Runtime(progress=False, n_jobs=1))
    with pytest.raises(DataError, match="no gallery individual named 'nobody'"):
        remove_photos(full, individuals=["nobody"])


def test_new_individual_is_found_and_a_changed_model_is_refused(repo: tuple[Path, dict[str, str]]) -> None:
    root, env = repo
    shutil.copytree(root / "gallery", root / "mine")
    full = pd.read_csv(root / "gallery/photos.csv", dtype=str)
    who = full["individual_id"].value_counts().index[0]
    names = list(full.loc[full["individual_id"] == who, "image"])
    assert whaleid(["gallery", "remove", "--id", who, "--gallery", "mine"], root, env).returncode == 0
    newbies = root / "newbie"
    newbies.mkdir()
    for n in names:
        shutil.copy(root / "data/sample/train_images" / n, newbies / n)
    proc = whaleid(
        ["gallery", "add", str(newbies), "--id", "newbie_1", "--gallery", "mine", "--boxes", "data/sample/boxes.csv"],
        root,
        env,
    )
    assert proc.returncode == 0, proc.stderr
    info = whaleid(["gallery", "info", "--gallery", "mine"], root, env).stdout
    assert f"{len(full)} photos" in info and "(1 added after training, 1 listed with every photo removed" in info
    proc = whaleid(
        [
            "identify",
            str(newbies / names[0]),
            "--gallery",
            "mine",
            "--format",
            "csv",
            "--boxes",
            "data/sample/boxes.csv",
        ],
        root,
        env,
    )
    assert proc.returncode == 0, proc.stderr
    ranked = pd.read_csv(__import__("io").StringIO(proc.stdout), dtype=str)["candidates"].iloc[0].split()
    (top, top_score), (_, second_score) = (c.split(":") for c in ranked[:2])
    assert top == "newbie_1" and float(top_score) > float(second_score)  # its own photo is in the gallery
    # Its old id has no photo left: never a candidate, though the model's ArcFace centre for it still exists.
    assert who not in [c.split(":")[0] for c in ranked] and who not in proc.stdout

    model = root / "models/fold0/model.pt"
    saved = model.read_bytes()
    model.write_bytes(saved + b"\0")
    try:
        proc = whaleid(["identify", str(newbies / names[0]), "--gallery", "mine"], root, env)
    finally:
        model.write_bytes(saved)
    assert proc.returncode == 2 and "is not the model the gallery was built with" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_gallery_writes_replace_only_galleries_go_through_links_and_two_adds_both_land(
    repo: tuple[Path, dict[str, str]],
) -> None:
    from whaleid.gallery.folder import Gallery

    root, env = repo
    tests = sorted((root / "data/sample/test_images").iterdir())
    shutil.copytree(root / "gallery", root / "g1")
    shutil.copytree(root / "gallery", root / "g2")
    before = len(Gallery.load(root / "g1").photos)
    (root / "other").mkdir()
    (root / "other/keep.txt").write_text("not whaleid's")
    for out in ("other", ".", "other/keep.txt"):
        done = whaleid(["gallery", "add", str(tests[0]), "--id", "x", "--gallery", "g1", "--out", out], root, env)
        assert done.returncode == 2 and "is not a gallery (no manifest.json)" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert (root / "other/keep.txt").read_text() == "not whaleid's" and (root / "dvc.yaml").is_file()

    (root / "link").symlink_to(root / "g2")
    done = whaleid(["gallery", "add", str(tests[0]), "--id", "x", "--gallery", "g1", "--out", "link"], root, env)
    assert done.returncode == 0, done.stderr
    assert (root / "link").is_symlink() and len(Gallery.load(root / "g2").photos) == before + 1  # written through

    # Two `gallery add` on one folder at once (real processes): the second waits for the first's lock, then adds to
    # what the first wrote, so both land.
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "whaleid.cli.main",
                "gallery",
                "add",
                *map(str, photos),
                "--id",
                who,
                "--gallery",
                "g1",
            ],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who, photos in (("a", tests[1:4]), ("b", tests[4:7]))
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    grown = Gallery.load(root / "g1")
    assert len(grown.photos) == before + 6 and grown.index.ntotal == before + 6
    assert (grown.photos["individual_id"].value_counts()[["a", "b"]] == 3).all()


def _damage(folder: Path, what: str) -> str:
    """Damage one file of a gallery copy as a crash, a bad disk or a hand edit would; the file the error names."""
    import json

    manifest = folder / "manifest.json"
    if what == "manifest-json":
        manifest.write_text('{"format": "whaleid-gallery-1", "models": [')
    elif what == "manifest-list":
        manifest.write_text("[1, 2]")
    elif what in ("rule-string", "rule-nan", "rule-scoring", "knn-key"):
        m = json.loads(manifest.read_text())
        if what == "knn-key":
            m["knn"]["kk"] = 3
        else:
            m["rule"].update(
                {
                    "rule-string": {"threshold": "0.3"},
                    "rule-nan": {"threshold": float("nan")},
                    "rule-scoring": {"scoring": "bogus"},
                }[what]
            )
        manifest.write_text(json.dumps(m))
    elif what == "index-cut":
        data = (folder / "index.faiss").read_bytes()
        (folder / "index.faiss").write_bytes(data[: len(data) // 2])
        return "index.faiss"
    elif what == "embeddings-cut":
        data = (folder / "embeddings.npz").read_bytes()
        (folder / "embeddings.npz").write_bytes(data[: len(data) // 2])
        return "embeddings.npz"
    elif what == "photos-column":
        photos = pd.read_csv(folder / "photos.csv", dtype=str)
        photos.drop(columns=["image"]).to_csv(folder / "photos.csv", index=False)
        return "photos.csv"
    elif what == "photos-unknown-id":
        photos = pd.read_csv(folder / "photos.csv", dtype=str)
        photos.loc[0, "individual_id"] = "nobody"
        photos.to_csv(folder / "photos.csv", index=False)
        return "photos.csv"
    return "manifest.json"


DAMAGES = [
    "manifest-json",
    "manifest-list",
    "rule-string",
    "rule-nan",
    "rule-scoring",
    "knn-key",
    "index-cut",
    "embeddings-cut",
    "photos-column",
    "photos-unknown-id",
]


def test_a_damaged_gallery_is_one_line_naming_its_file(repo: tuple[Path, dict[str, str]], monkeypatch, capfd) -> None:
    from whaleid.cli.main import main
    from whaleid.core.errors import DataError
    from whaleid.gallery.folder import Gallery

    root, _ = repo
    monkeypatch.chdir(root)
    for what in DAMAGES:
        folder = root / f"damaged-{what}"
        shutil.copytree(root / "gallery", folder)
        name = _damage(folder, what)
        with pytest.raises(DataError, match=rf"^damaged-{what}/{name}: .*") as refused:
            Gallery.load(f"damaged-{what}")
        assert "\n" not in str(refused.value), what
    # Through the command: exit 2, the one line, no traceback (NaN threshold: refused, not "new for 100%").
    photo = sorted((root / "data/sample/test_images").iterdir())[0]
    capfd.readouterr()
    assert main(["identify", str(photo), "--gallery", "damaged-rule-nan"]) == 2
    err = capfd.readouterr().err
    assert "damaged-rule-nan/manifest.json: threshold must be a number" in err and "Traceback" not in err


def test_gallery_add_refuses_bad_csvs_and_a_photo_given_twice_before_any_work(
    repo: tuple[Path, dict[str, str]], monkeypatch, capfd
) -> None:
    from whaleid.cli.main import main

    root, _ = repo
    monkeypatch.chdir(root)
    tests = sorted((root / "data/sample/test_images").iterdir())
    cases = {
        "latin1.csv": (f"image,individual_id\n{tests[0].name},caf\u00e9\n".encode("latin-1"), "not a valid UTF-8 CSV"),
        "empty.csv": (b"", "the file is empty"),
        "header.csv": (b"image,individual_id\n", "has a header but no rows"),
        "column.csv": (f"image,id\n{tests[0].name},x\n".encode(), "missing column(s) individual_id"),
        "escape.csv": (b"image,individual_id\n../../dvc.yaml,x\n", "is not a plain file name"),
    }
    for name, (data, message) in cases.items():
        (root / name).write_bytes(data)
        capfd.readouterr()
        rc = main(["gallery", "add", "--csv", name, "--images", "data/sample/test_images", "--out", "g-csv"])
        err = capfd.readouterr().err
        assert rc == 2 and f"{name}" in err and message in err and "Traceback" not in err, (name, err)
    twice = root / "twice"
    twice.mkdir()
    shutil.copy(tests[0], twice / "a.jpg")
    shutil.copy(tests[0], twice / "b.jpg")
    capfd.readouterr()
    assert main(["gallery", "add", str(twice), "--id", "newcomer", "--out", "g-twice"]) == 2
    assert f"{twice / 'b.jpg'} and {twice / 'a.jpg'} are the same photo (same bytes)" in capfd.readouterr().err
    assert not (root / "g-csv").exists() and not (root / "g-twice").exists()


def test_identify_on_a_gallery_of_three_individuals_lists_them_and_new_individual(
    repo: tuple[Path, dict[str, str]], monkeypatch
) -> None:
    from whaleid.gallery.folder import Gallery, remove_photos
    from whaleid.gallery.identify import identify

    root, _ = repo
    monkeypatch.chdir(root)  # the manifest names the models relative to the project folder
    full = Gallery.load(root / "gallery")
    keep = list(full.individuals["individual_id"][:3])
    small = remove_photos(full, individuals=[i for i in full.individuals["individual_id"] if i not in keep])
    small.save(root / "g-three")
    photos = sorted((root / "data/sample/test_images").iterdir())[:4]
    out = identify(Gallery.load(root / "g-three"), photos, run=Runtime(n_jobs=1, progress=False))
    for row in out["predictions"].str.split():
        assert sorted(row) == sorted([*keep, "new_individual"])  # four distinct answers, nothing filled in


def test_a_frozen_descriptor_joins_the_fusion_and_identify_gives_its_submission(
    reproduced: tuple[Path, str], tmp_path: Path
) -> None:
    """``local.descriptor`` on the tiny run: the weights stage names the file, only the scoring stages rerun (the
    model is kept), and identifying the test photos against the gallery gives the new submission's rows, so the
    gallery keeps the descriptors and describes new photos as the keypoints stage did."""
    import json

    import timm
    import torch
    import yaml
    from safetensors.torch import save_file
    from tinyrepo import DVC, run

    repo = tmp_path / "repo"
    env = copy_repo(reproduced[0], repo)
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=0, global_pool="")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "frozen.safetensors"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["local"].update(descriptor="test_resnet", descriptor_weights=str(tmp_path / "frozen.safetensors"),
                           descriptor_size=64)  # fmt: skip
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    model = (repo / "models/fold0/model.pt").read_bytes()
    out = run([*DVC, "repro"], repo, env)
    assert "Running stage 'keypoints'" in out and "Running stage 'train" not in out
    assert (repo / "models/fold0/model.pt").read_bytes() == model
    named = json.loads((repo / "models/descriptor.json").read_text())
    assert named["backbone"] == "test_resnet" and named["source"] == "file" and len(named["sha256"]) == 64
    calibration = json.loads((repo / "data/fused/calibration.json").read_text())
    assert "descriptor" in json.dumps(calibration)
    identify_gives_the_submission(repo, env)
