"""The resize stage's work: crop coordinates, crop + resize, the boxes CSV, resuming and corrupt images."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import whaleid.data.resize as prepare
from whaleid.core.errors import DataError
from whaleid.core.runtime import Runtime
from whaleid.data.boxes import crop_coords, read_boxes
from whaleid.data.images import read_image
from whaleid.data.resize import check_box, folder_digest, prepare_image, resize_split, resized_name


def test_crop_coords_hand_computed() -> None:
    # Box 20 wide, 10 high; margin 0.1 -> 2 px left/right, 1 px top/bottom.
    assert crop_coords(100, 80, (10, 20, 30, 30), 0.1) == (8, 19, 32, 31)
    # Clipped to the image; fractional boxes round outwards.
    assert crop_coords(50, 40, (-5.5, 2.4, 60, 39.2), 0.0) == (0, 2, 50, 40)
    # A box outside the image still yields at least one pixel.
    x1, y1, x2, y2 = crop_coords(10, 10, (20, 20, 30, 30), 0.0)
    assert x2 - x1 >= 1 and y2 - y1 >= 1 and x2 <= 10 and y2 <= 10


def test_prepare_image_is_crop_then_area_resize() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(60, 90, 3), dtype=np.uint8)
    got = prepare_image(img, 16, (10, 5, 50, 45), 0.1)
    want = cv2.resize(img[1:49, 6:54], (16, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(prepare_image(img[:16, :16], 16), img[:16, :16])  # already the size: untouched


def test_read_boxes_errors_name_the_line(tmp_path: Path) -> None:
    good = tmp_path / "boxes.csv"
    good.write_text("image,x1,y1,x2,y2\na.jpg,1,2,3,4\nb.jpg,0,0,10.5,9\n")
    assert read_boxes(good) == {"a.jpg": (1.0, 2.0, 3.0, 4.0), "b.jpg": (0.0, 0.0, 10.5, 9.0)}
    bad = tmp_path / "bad.csv"
    bad.write_text("image,x1,y1,x2,y2\na.jpg,1,2,3,4\nb.jpg,5,0,2,9\n")
    with pytest.raises(DataError, match=r"bad.csv:3: .*'b.jpg'.*x1 < x2"):
        read_boxes(bad)
    bad.write_text("image,x1,y1,x2,y2\na.jpg,1,2,oops,4\n")
    with pytest.raises(DataError, match=r"bad.csv:2:"):
        read_boxes(bad)
    bad.write_text("image,left,top\na.jpg,1,2\n")
    with pytest.raises(DataError, match="missing column"):
        read_boxes(bad)
    with pytest.raises(DataError, match="boxes file not found"):
        read_boxes(tmp_path / "nope.csv")


def test_normalised_boxes_are_refused(tmp_path: Path) -> None:
    yolo = tmp_path / "yolo.csv"
    yolo.write_text("image,x1,y1,x2,y2\na.jpg,0.1,0.2,0.5,0.9\nb.jpg,0,0,1,1\n")
    with pytest.raises(DataError, match=r"yolo.csv: every coordinate is between 0 and 1: normalised"):
        read_boxes(yolo)


def test_check_box_inside_share_hand_computed() -> None:
    check_box((0, 0, 10, 10), 10, 10, "in.jpg")  # wholly inside
    check_box((-5, 0, 5, 10), 10, 10, "half.jpg")  # exactly half inside: kept (clipped when cropped)
    with pytest.raises(DataError, match=r"part.jpg: box \(-6, 0, 4, 10\) lies mostly outside the 10 x 10 image"):
        check_box((-6, 0, 4, 10), 10, 10, "part.jpg")  # 40% inside
    with pytest.raises(DataError, match=r"out.jpg: box \(20, 20, 30, 30\) lies outside the 10 x 10 image"):
        check_box((20, 20, 30, 30), 10, 10, "out.jpg")


def test_resize_split_resumes_and_names_corrupt_files(dataset_copy: Path, tmp_path: Path, monkeypatch) -> None:
    sources = sorted((dataset_copy / "train_images").iterdir())[:12]
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    boxes = {sources[0].name: (2.0, 3.0, 20.0, 25.0)}
    assert (
        resize_split(sources, out, cache, size=16, boxes=boxes, margin=0.0, run=Runtime(n_jobs=1, progress=False)) == 1
    )
    first = read_image(out / f"{sources[0].name}.bmp")
    np.testing.assert_array_equal(first, prepare_image(read_image(sources[0]), 16, boxes[sources[0].name]))
    assert all(read_image(p).shape == (16, 16, 3) for p in out.iterdir())

    # A second run (e.g. after an interruption) decodes nothing already done.
    calls = []
    monkeypatch.setattr(prepare, "read_image", lambda p, *a: calls.append(p) or read_image(p, *a))
    out2 = tmp_path / "out2"
    out2.mkdir()
    resize_split(sources, out2, cache, size=16, boxes=boxes, margin=0.0, run=Runtime(n_jobs=1, progress=False))
    assert calls == [] and folder_digest(out2) == folder_digest(out)

    # A replaced source file is redone; a truncated one is named.
    data = sources[1].read_bytes()
    sources[1].write_bytes(data[: len(data) // 2])
    out3 = tmp_path / "out3"
    out3.mkdir()
    with pytest.raises(DataError, match=rf"(?s)1 image\(s\) cannot be read.*{sources[1].name}: truncated JPEG"):
        resize_split(sources, out3, cache, size=16, boxes=boxes, margin=0.0, run=Runtime(n_jobs=1, progress=False))


def test_folder_digest_tracks_content_not_mtime(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    before = folder_digest(tmp_path)
    st = (tmp_path / "a").stat()
    os.utime(tmp_path / "a", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert folder_digest(tmp_path) == before
    (tmp_path / "a").write_bytes(b"y")
    assert folder_digest(tmp_path) != before


def test_resize_formats_bmp_png_lossless_jpg_close(dataset_copy: Path, tmp_path: Path) -> None:
    sources = sorted((dataset_copy / "train_images").iterdir())[:4]
    for fmt in ("bmp", "png", "jpg"):
        out = tmp_path / fmt
        out.mkdir()
        resize_split(
            sources,
            out,
            tmp_path / "cache",
            size=16,
            boxes=None,
            margin=0.0,
            fmt=fmt,
            jpeg_quality=90,
            run=Runtime(n_jobs=1, progress=False),
        )
        assert sorted(p.name for p in out.iterdir()) == sorted(resized_name(p.name, fmt) for p in sources)
        for src in sources:
            want = prepare_image(read_image(src), 16).astype(int)
            got = read_image(out / resized_name(src.name, fmt)).astype(int)
            if fmt == "jpg":
                assert 0 < np.abs(got - want).mean() < 8  # lossy (chroma subsampling at 16 px), but close
            else:
                np.testing.assert_array_equal(got, want)


def test_a_bad_box_is_named_with_plain_numbers(tmp_path: Path) -> None:
    (tmp_path / "boxes.csv").write_text("image,x1,y1,x2,y2\na.jpg,50,10,40,30\n")
    with pytest.raises(DataError, match=r"boxes.csv:2: box \(50, 10, 40, 30\) for 'a.jpg' is not numbers") as bad:
        read_boxes(tmp_path / "boxes.csv")
    assert "np.int64" not in str(bad.value)
