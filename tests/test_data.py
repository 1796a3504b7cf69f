"""Dataset validation: every bad input gives a DataError naming the file/row; odd image modes are converted."""

from __future__ import annotations

import io
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from whaleid.core.errors import DataError
from whaleid.data.images import ImageDataset, decode_image, read_image
from whaleid.data.layout import load_dataset, safe_name
from whaleid.model.transforms import AsUint8, train_transform


def _rewrite(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _first_train(root: Path) -> str:
    return pd.read_csv(root / "train.csv", dtype=str)["image"][0]


def test_valid_dataset_loads(tiny_dataset: Path) -> None:
    ds = load_dataset(tiny_dataset)
    assert len(ds.train) == 160 and len(ds.test_images) == 60 and ds.solution is not None


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found"):
        load_dataset(tmp_path / "nope")


def test_missing_train_csv(dataset_copy: Path) -> None:
    (dataset_copy / "train.csv").unlink()
    with pytest.raises(DataError, match=r"train\.csv: file not found"):
        load_dataset(dataset_copy)


def test_missing_column(dataset_copy: Path) -> None:
    frame = pd.read_csv(dataset_copy / "train.csv").drop(columns="species")
    frame.to_csv(dataset_copy / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) species"):
        load_dataset(dataset_copy)


def test_empty_csv(dataset_copy: Path) -> None:
    _rewrite(dataset_copy / "train.csv", "")
    with pytest.raises(DataError, match="the file is empty"):
        load_dataset(dataset_copy)


def test_header_only_csv(dataset_copy: Path) -> None:
    _rewrite(dataset_copy / "train.csv", "image,species,individual_id\n")
    with pytest.raises(DataError, match="no rows"):
        load_dataset(dataset_copy)


def test_not_a_csv(dataset_copy: Path) -> None:
    (dataset_copy / "train.csv").write_bytes(b"\xff\xfe\x00binary\x00junk")
    with pytest.raises(DataError, match="not a valid UTF-8 CSV"):
        load_dataset(dataset_copy)


def test_empty_cell_names_line(dataset_copy: Path) -> None:
    frame = pd.read_csv(dataset_copy / "train.csv", dtype=str)
    frame.loc[3, "individual_id"] = ""
    frame.to_csv(dataset_copy / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train\.csv:5: empty value in column 'individual_id'"):
        load_dataset(dataset_copy)


def test_duplicate_rows_named(dataset_copy: Path) -> None:
    frame = pd.read_csv(dataset_copy / "train.csv", dtype=str)
    frame = pd.concat([frame, frame.iloc[[2]]])
    frame.to_csv(dataset_copy / "train.csv", index=False)
    name = frame["image"].iloc[2]
    with pytest.raises(DataError, match=rf"duplicate image '{name}' on lines 4, 162"):
        load_dataset(dataset_copy)


def test_listed_image_absent(dataset_copy: Path) -> None:
    name = _first_train(dataset_copy)
    (dataset_copy / "train_images" / name).unlink()
    with pytest.raises(DataError, match=rf"train\.csv:2: image '{name}' is listed but not in"):
        load_dataset(dataset_copy)


@pytest.mark.parametrize("bad", ["../train.csv", "/etc/passwd", "sub/../../x.jpg", "..\\x.jpg"])
def test_escaping_names_rejected(dataset_copy: Path, bad: str) -> None:
    frame = pd.read_csv(dataset_copy / "train.csv", dtype=str)
    frame.loc[0, "image"] = bad
    frame.to_csv(dataset_copy / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train\.csv:2: image name .* is not a plain file name"):
        load_dataset(dataset_copy)


def test_safe_name_accepts_plain_and_unicode() -> None:
    assert safe_name("baleine_été_1.jpg", "x") == "baleine_été_1.jpg"


def test_image_name_too_long_for_its_stored_copies_is_named(dataset_copy: Path) -> None:
    """A 230-byte name is a valid file name, but the resize stage's copies (name + format suffix, cache prefix)
    would pass 255 bytes; the CSV row is named before any work."""
    frame = pd.read_csv(dataset_copy / "train.csv", dtype=str)
    long_name = "é" * 110 + ".jpg"  # 224 bytes in UTF-8
    (dataset_copy / "train_images" / frame.loc[3, "image"]).rename(dataset_copy / "train_images" / long_name)
    frame.loc[3, "image"] = long_name
    frame.to_csv(dataset_copy / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train\.csv:5: image name 'é+'\.\.\. is 224 bytes long; at most 200"):
        load_dataset(dataset_copy)
    assert safe_name("a" * 196 + ".jpg", "x")  # 200 bytes: fine


def test_fewer_than_five_individuals_is_named(dataset_copy: Path) -> None:
    frame = pd.read_csv(dataset_copy / "train.csv", dtype=str)
    keep = frame["individual_id"].drop_duplicates().iloc[:4]
    frame[frame["individual_id"].isin(keep)].to_csv(dataset_copy / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train\.csv: 4 individual\(s\); MAP@5 ranks 5 distinct"):
        load_dataset(dataset_copy)
    frame[frame["individual_id"].isin(frame["individual_id"].drop_duplicates().iloc[:5])].to_csv(
        dataset_copy / "train.csv", index=False
    )
    assert load_dataset(dataset_copy).train["individual_id"].nunique() == 5


def test_empty_test_images(dataset_copy: Path) -> None:
    for p in (dataset_copy / "test_images").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="test_images: folder is empty"):
        load_dataset(dataset_copy)


def test_sample_submission_disagrees_with_folder(dataset_copy: Path) -> None:
    frame = pd.read_csv(dataset_copy / "sample_submission.csv", dtype=str)
    dropped = frame["image"].iloc[-1]
    frame.iloc[:-1].to_csv(dataset_copy / "sample_submission.csv", index=False)
    with pytest.raises(DataError, match=rf"disagrees with .*test_images.*'{dropped}'"):
        load_dataset(dataset_copy)


def test_non_ascii_file_names_work(dataset_copy: Path) -> None:
    frame = pd.read_csv(dataset_copy / "train.csv", dtype=str)
    old = frame.loc[0, "image"]
    new = "baleine_été_ü.jpg"
    (dataset_copy / "train_images" / old).rename(dataset_copy / "train_images" / new)
    frame.loc[0, "image"] = new
    frame.to_csv(dataset_copy / "train.csv", index=False)
    ds = load_dataset(dataset_copy)
    assert read_image(ds.train_paths()[0]).shape == (32, 32, 3)


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_grayscale_is_converted() -> None:
    gray = Image.fromarray(np.full((8, 9), 77, np.uint8), mode="L")
    out = decode_image(_encode(gray, "PNG"))
    assert out.shape == (8, 9, 3) and (out == 77).all()


def test_rgba_is_converted() -> None:
    arr = np.zeros((6, 5, 4), np.uint8)
    arr[..., 0], arr[..., 3] = 200, 255
    out = decode_image(_encode(Image.fromarray(arr, mode="RGBA"), "PNG"))
    assert out.shape == (6, 5, 3) and (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()


def test_16bit_is_converted() -> None:
    arr = np.full((4, 4), 65535, np.uint16)
    arr[0, 0] = 257 * 10
    ok, buf = cv2.imencode(".png", arr)
    out = decode_image(buf.tobytes())
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert out[1, 1, 0] == 255 and out[0, 0, 0] == 10


def test_cmyk_jpeg_is_converted() -> None:
    rgb = Image.new("RGB", (10, 10), (200, 30, 30))
    out = decode_image(_encode(rgb.convert("CMYK"), "JPEG", quality=95))
    assert out.shape == (10, 10, 3)
    assert out[..., 0].mean() > 150 and out[..., 1].mean() < 90  # still red


def test_exif_rotation_is_applied() -> None:
    img = Image.new("RGB", (20, 10), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(_encode(img, "JPEG", exif=exif.tobytes()))
    assert out.shape == (20, 10, 3)


def test_truncated_jpeg_named(tmp_path: Path) -> None:
    data = _encode(Image.new("RGB", (32, 32), (10, 200, 10)), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: truncated JPEG"):
        read_image(path)


def test_jpeg_with_bytes_after_its_end_marker_decodes(tmp_path: Path) -> None:
    """Phones and editors append data after FF D9; the image is whole. An EXIF thumbnail (its own FF D9 in the
    header) does not hide a truncated main image."""
    img = Image.new("RGB", (32, 32), (10, 200, 10))
    data = _encode(img, "JPEG")
    expected = decode_image(data)
    path = tmp_path / "trailer.jpg"
    path.write_bytes(data + b"SEFT trailer \xff\xda\x00\x08" + bytes(range(256)))
    assert np.array_equal(read_image(path), expected)
    thumb = _encode(Image.new("RGB", (8, 8), (0, 0, 255)), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 1
    with_thumb = _encode(img, "JPEG", exif=exif.tobytes() + thumb)
    assert with_thumb.count(b"\xff\xd9") >= 2
    path.write_bytes(with_thumb[: len(with_thumb) - 20])
    with pytest.raises(DataError, match="truncated JPEG"):
        read_image(path)


def test_image_over_the_pixel_limit_is_named_before_decoding(tmp_path: Path) -> None:
    """A 20000 x 20000 PNG is small on disk (one colour) but 1.2 GB decoded: refused from its header."""
    path = tmp_path / "huge.png"
    Image.new("L", (20000, 20000), 0).save(path, optimize=False)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(DataError, match=r"huge\.png: 20000 x 20000 pixels, over data\.max_megapixels \(100 MP"):
        read_image(path)


def test_pixel_cap_is_a_param_and_its_message_names_it(tmp_path: Path) -> None:
    """data.max_megapixels bounds decoding memory (3 bytes a pixel): a 1500 x 1000 photo is refused under a 1 MP
    cap, by name, before any decoding, and read under the default."""
    path = tmp_path / "photo.png"
    Image.new("RGB", (1500, 1000), (10, 20, 30)).save(path)
    with pytest.raises(DataError, match=r"photo\.png: 1500 x 1000 pixels, over data\.max_megapixels \(1 MP"):
        read_image(path, max_megapixels=1.0)
    assert read_image(path).shape == (1000, 1500, 3)


@pytest.mark.parametrize("height", [37, -37])  # bottom-up and top-down rows
def test_bmp_header_size_matches_pillow(height: int) -> None:
    """The resized BMPs' header is parsed directly (training reads one per image); it must agree with Pillow."""
    from whaleid.data.images import image_size

    data = bytearray(cv2.imencode(".bmp", np.zeros((37, 53, 3), np.uint8))[1].tobytes())
    data[22:26] = height.to_bytes(4, "little", signed=True)
    with Image.open(io.BytesIO(bytes(data))) as img:
        assert image_size(bytes(data)) == img.size == (53, 37)


@pytest.mark.parametrize("shape", [(96, 96), (7, 5), (1, 1), (3, 13)])  # widths 5 and 13: padded rows
def test_bmp_fast_decoder_matches_opencv_and_pillow(shape: tuple[int, int]) -> None:
    """24-bit BMPs are decoded from their rows directly; every variant must give OpenCV's and Pillow's array."""
    from whaleid.data.bmp import decode_bmp24 as _decode_bmp24

    bgr = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    data = cv2.imencode(".bmp", bgr)[1].tobytes()
    assert _decode_bmp24(data) is not None  # the fast path, not the fallback, is what is checked
    with Image.open(io.BytesIO(data)) as img:
        np.testing.assert_array_equal(decode_image(data), np.asarray(img.convert("RGB")))
    np.testing.assert_array_equal(decode_image(data), bgr[:, :, ::-1])
    # top-down rows (negative height): the same pixels stored first row first
    top_down = bytearray(data[:54]) + b"".join(
        data[54 + r * len(data[54:]) // shape[0] : 54 + (r + 1) * len(data[54:]) // shape[0]]
        for r in reversed(range(shape[0]))
    )
    top_down[22:26] = (-shape[0]).to_bytes(4, "little", signed=True)
    with Image.open(io.BytesIO(bytes(top_down))) as img:
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), bgr[:, :, ::-1])
    np.testing.assert_array_equal(decode_image(bytes(top_down)), bgr[:, :, ::-1])
    # not a plain 24-bit BMP (8-bit grey, cut short): left to OpenCV, which converts or names it
    grey = cv2.imencode(".bmp", bgr[:, :, 0])[1].tobytes()
    assert _decode_bmp24(grey) is None
    np.testing.assert_array_equal(decode_image(grey), np.repeat(bgr[:, :, :1], 3, axis=2))
    assert _decode_bmp24(data[:-1]) is None
    with pytest.raises(DataError, match="cannot decode"):
        decode_image(data[: len(data) // 2])


def test_corrupt_image_named(tmp_path: Path) -> None:
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"this is not an image at all")
    with pytest.raises(DataError, match=r"junk\.jpg: cannot decode"):
        read_image(path)


def test_dataset_yields_uint8_images_or_normalised_tensors(tiny_dataset: Path) -> None:
    from whaleid.config import AugmentConfig

    ds = load_dataset(tiny_dataset)
    paths = ds.train_paths()[:3]
    x, y = ImageDataset(paths, AsUint8(24), labels=[0, 1, 2])[1]
    want = cv2.resize(read_image(paths[1]), (24, 24), interpolation=cv2.INTER_AREA)
    assert x.dtype == torch.uint8 and y == 1
    np.testing.assert_array_equal(x.numpy(), want)
    # The albumentations backend: normalised CHW floats, re-seeded per item so an (index, seed) pair repeats.
    items = ImageDataset(paths, train_transform(24, AugmentConfig(backend="albumentations")), labels=[0, 1, 2])
    a, _ = items[(2, 7)]
    b, _ = items[(2, 7)]
    assert tuple(a.shape) == (3, 24, 24) and a.dtype == torch.float32 and torch.equal(a, b)
    assert -3 < float(a.min()) < float(a.max()) < 3


def test_check_command(dataset_copy: Path, tmp_path: Path) -> None:
    from whaleid.pipeline.check import main

    params = tmp_path / "params.yaml"
    params.write_text(f"train:\n  epochs: 3\ncrop:\n  boxes: {dataset_copy / 'boxes.csv'}\n", encoding="utf-8")
    assert main([str(dataset_copy), "--params", str(params)]) == 0
    params.write_text(f"crop:\n  boxes: {tmp_path / 'nope.csv'}\n", encoding="utf-8")
    assert main([str(dataset_copy), "--params", str(params)]) == 2  # the boxes file is checked too
    missing = tmp_path / "frozen.safetensors"
    params.write_text(f"local:\n  descriptor: test_resnet\n  descriptor_weights: {missing}\n", encoding="utf-8")
    assert main([str(dataset_copy), "--params", str(params)]) == 2  # and the frozen descriptor's weights
    name = _first_train(dataset_copy)
    (dataset_copy / "train_images" / name).write_bytes(b"\xff\xd8\xff\xe0 cut short")
    params.write_text("train:\n  epoch: 3\n", encoding="utf-8")
    assert main([str(dataset_copy), "--params", str(params)]) == 2


@pytest.mark.parametrize(
    "col,bad,message",
    [
        ("individual_id", "whale 350009c5283e", "contains whitespace.*'whale_350009c5283e'"),
        ("individual_id", "350009c5283e ", "contains whitespace"),
        ("species", "\\tbeluga", "contains whitespace"),
        ("individual_id", "new_individual", "reserved"),
        ("individual_id", "New_Individual", "reserved"),
    ],
)
def test_ids_that_would_break_the_submission_are_refused_naming_the_line(
    dataset_copy: Path, col: str, bad: str, message: str
) -> None:
    csv = dataset_copy / "train.csv"
    frame = pd.read_csv(csv, dtype=str)
    frame.loc[3, col] = bad.replace("\\t", "\t")
    frame.to_csv(csv, index=False)
    with pytest.raises(DataError, match=rf"train.csv:5: {col} .*{message}"):
        load_dataset(dataset_copy)


def test_ids_differing_only_in_case_are_refused(dataset_copy: Path) -> None:
    csv = dataset_copy / "train.csv"
    frame = pd.read_csv(csv, dtype=str)
    frame.loc[1, "individual_id"] = frame.loc[0, "individual_id"].upper()  # generated ids are lower-case hex
    frame.to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"individual_id values .* differ only in letter case; use one spelling"):
        load_dataset(dataset_copy)


def test_symlink_out_of_the_dataset_is_refused_and_one_inside_is_fine(dataset_copy: Path, tmp_path: Path) -> None:
    name = _first_train(dataset_copy)
    image = dataset_copy / "train_images" / name
    inside = dataset_copy / "originals" / name
    inside.parent.mkdir()
    image.rename(inside)
    image.symlink_to(inside)  # deduplicated data: a link to a file inside the dataset folder is accepted
    assert load_dataset(dataset_copy).train["image"][0] == name
    outside = tmp_path / "elsewhere.jpg"
    inside.rename(outside)
    image.unlink()
    image.symlink_to(outside)
    with pytest.raises(DataError, match=rf"train.csv:2: image '{name}' is a symbolic link to .*elsewhere.jpg, outside"):
        load_dataset(dataset_copy)


def test_check_flags_a_test_photo_that_is_a_training_photo(dataset_copy: Path, tmp_path: Path, capfd) -> None:
    from whaleid.pipeline.check import main

    train = pd.read_csv(dataset_copy / "train.csv", dtype=str)
    test_name = pd.read_csv(dataset_copy / "sample_submission.csv", dtype=str)["image"][2]
    (dataset_copy / "test_images" / test_name).write_bytes(
        (dataset_copy / "train_images" / train["image"][4]).read_bytes()
    )
    params = tmp_path / "params.yaml"
    params.write_text("crop:\n  boxes: null\n", encoding="utf-8")
    assert main([str(dataset_copy), "--params", str(params)]) == 0  # a warning: the data may be right
    out = capfd.readouterr()
    assert (
        f"1 test photo(s) are byte for byte the same file as a training photo, e.g. test_images/{test_name} = "
        f"train_images/{train['image'][4]} (individual {train['individual_id'][4]})"
    ) in out.err + out.out


def test_csv_without_final_line_break_warns_naming_its_last_row(dataset_copy: Path, caplog) -> None:
    csv = dataset_copy / "train.csv"
    text = csv.read_text(encoding="utf-8").rstrip("\n")
    csv.write_text(text, encoding="utf-8")
    with caplog.at_level("WARNING", logger="whaleid.data.layout"):
        load_dataset(dataset_copy)
    assert "does not end with a line break" in caplog.text and text.splitlines()[-1] in caplog.text


def test_csv_parse_error_is_one_line(dataset_copy: Path) -> None:
    csv = dataset_copy / "train.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    lines[2] = "," + lines[2]
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.csv: not a valid UTF-8 CSV file: .*Expected 3 fields in line 3") as err:
        load_dataset(dataset_copy)
    assert "\n" not in str(err.value)


def test_training_photos_train_csv_does_not_list_are_named_in_a_warning(dataset_copy: Path, caplog) -> None:
    csv = dataset_copy / "train.csv"
    lines = csv.read_text(encoding="utf-8").splitlines(keepends=True)
    csv.write_text("".join(lines[:-3]), encoding="utf-8")  # cut at a line break: a valid, shorter file
    with caplog.at_level("WARNING", logger="whaleid.data.layout"):
        ds = load_dataset(dataset_copy)
    assert len(ds.train) == len(lines) - 4
    dropped = sorted(line.split(",")[0] for line in lines[-3:])
    assert f"holds 3 file(s) that train.csv does not list (e.g. {dropped[0]!r})" in caplog.text


def test_check_names_training_photos_with_the_same_bytes_and_different_ids(
    dataset_copy: Path, tmp_path: Path, capfd
) -> None:
    from whaleid.pipeline.check import conflicting_copies, main

    train = pd.read_csv(dataset_copy / "train.csv", dtype=str)
    other = int(np.flatnonzero((train["individual_id"] != train["individual_id"][0]).to_numpy())[0])
    same = int(np.flatnonzero((train["individual_id"] == train["individual_id"][0]).to_numpy())[1])
    for row in (other, same):  # a copy under another id is named; one under the same id is only a duplicate
        (dataset_copy / "train_images" / train["image"][row]).write_bytes(
            (dataset_copy / "train_images" / train["image"][0]).read_bytes()
        )
    params = tmp_path / "params.yaml"
    params.write_text("crop:\n  boxes: null\n", encoding="utf-8")
    assert main([str(dataset_copy), "--params", str(params)]) == 0
    out = capfd.readouterr()
    first, second = sorted([0, other])
    assert (
        f"1 training photo(s) are byte for byte the same file as another one of a different individual, e.g. "
        f"train_images/{train['image'][first]} ({train['individual_id'][first]}) = "
        f"train_images/{train['image'][second]} ({train['individual_id'][second]})"
    ) in out.err + out.out
    # Against a hand-made case: digest "" (unreadable) never pairs; only a different id is reported.
    frame = pd.DataFrame({"image": ["a", "b", "c", "d", "e"], "individual_id": ["x", "x", "y", "z", "w"]})
    assert conflicting_copies(frame, ["h1", "h1", "h1", "", ""]) == [("a", "c")]


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_listed_image_that_is_not_a_regular_file_is_refused_by_type_without_reading(
    dataset_copy: Path, kind: str
) -> None:
    import os

    name = _first_train(dataset_copy)
    path = dataset_copy / "train_images" / name
    path.unlink()
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    what = "a FIFO" if kind == "fifo" else "a folder"
    with pytest.raises(DataError, match=rf"train.csv:2: image '{name}' in .*train_images is {what}, not an image"):
        load_dataset(dataset_copy)
    with pytest.raises(DataError, match=f"{what}, not an image file"):  # a FIFO's read would wait for a writer
        read_image(path)


@pytest.mark.parametrize("labels", [None, "1d", "2d"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_inline_batches_are_the_dataloaders_batches(tiny_dataset: Path, labels: str | None, drop_last: bool) -> None:
    """Without workers the loader is our InlineBatches; its batches must be torch's DataLoader's, item for item:
    plain order and the training sampler's (index, seed) pairs, with the albumentations transform re-seeded."""
    from whaleid.config import AugmentConfig
    from whaleid.core.device import InlineBatches, make_loader
    from whaleid.model.train import EpochSampler

    paths = load_dataset(tiny_dataset).train_paths()[:7]
    rows = {None: None, "1d": np.arange(7) * 3, "2d": np.stack([np.arange(7), np.arange(7) % 2], axis=1)}[labels]
    for transform, sampler in [
        (AsUint8(24), None),
        (train_transform(24, AugmentConfig(backend="albumentations")), EpochSampler(7, seed=5)),
    ]:
        ds = ImageDataset(paths, transform, rows)
        ours = make_loader(ds, 3, num_workers=0, device=torch.device("cpu"), sampler=sampler, drop_last=drop_last)
        assert isinstance(ours, InlineBatches)
        theirs = torch.utils.data.DataLoader(ds, batch_size=3, sampler=sampler, drop_last=drop_last)
        assert len(ours) == len(theirs) == (2 if drop_last else 3)
        got, want = list(ours), list(theirs)
        assert len(got) == len(want)
        for (a, la), (b, lb) in zip(got, want, strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)
            assert la.dtype == lb.dtype == torch.int64 and torch.equal(la, lb)


def _bmp_files(folder: Path, size: int, n: int, seed: int = 0) -> list[Path]:
    """``n`` random size x size photos written as OpenCV writes BMPs (bottom-up rows, blue first)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"p{i}.bmp"
        path.write_bytes(cv2.imencode(".bmp", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))[1].tobytes())
        paths.append(path)
    return paths


def test_bmp_batch_reads_what_the_decoder_reads(tmp_path: Path) -> None:
    """A batch of resized photos is read straight into one array; what it cannot read (another layout, depth,
    size or format, a short file, a folder, a missing file) is named as unread, and the dataset's batch -- those
    photos decoded one by one -- equals stacking its items one at a time."""
    from whaleid.data.bmp import read_bmp_batch

    size = 8
    good = _bmp_files(tmp_path, size, 4)
    data = good[0].read_bytes()
    top_down = bytearray(data[:54]) + b"".join(data[54 + r * 24 : 54 + (r + 1) * 24] for r in reversed(range(size)))
    top_down[22:26] = (-size).to_bytes(4, "little", signed=True)
    odd = {
        "top_down.bmp": bytes(top_down),
        "grey.bmp": cv2.imencode(".bmp", np.full((size, size), 7, np.uint8))[1].tobytes(),
        "larger.bmp": cv2.imencode(".bmp", np.full((size + 4, size, 3), 9, np.uint8))[1].tobytes(),
        "photo.png": cv2.imencode(".png", np.full((size, size, 3), 5, np.uint8))[1].tobytes(),
        "short.bmp": data[:-5],
    }
    for name, content in odd.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "folder.bmp").mkdir()
    paths = [good[0], tmp_path / "top_down.bmp", good[1], tmp_path / "grey.bmp", tmp_path / "larger.bmp"]
    paths += [good[2], tmp_path / "photo.png", tmp_path / "short.bmp", tmp_path / "folder.bmp", good[3]]
    paths.append(tmp_path / "missing.bmp")
    array, unread = read_bmp_batch([str(p) for p in paths], size)
    assert unread == [1, 3, 4, 6, 7, 8, 10]
    for i in (0, 2, 5, 9):
        np.testing.assert_array_equal(array[i], read_image(paths[i]))
    readable = [p for i, p in enumerate(paths) if i not in (7, 8, 10)]
    dataset = ImageDataset(readable, AsUint8(size))
    batch, _ = dataset.batch(range(len(readable)))
    torch.testing.assert_close(batch, torch.stack([dataset[i][0] for i in range(len(readable))]), rtol=0, atol=0)
    np.testing.assert_array_equal(batch[1].numpy(), read_image(good[0]))  # top-down: the same photo
    for bad in ("short.bmp", "folder.bmp", "missing.bmp"):
        with pytest.raises(DataError, match=re.escape(bad)):
            ImageDataset([good[0], tmp_path / bad], AsUint8(size)).batch([0, 1])


@pytest.mark.parametrize("size", [5, 8])  # 5: rows padded to 4 bytes, read one by one
def test_kept_batches_are_copies_and_padded_sizes_decode(tmp_path: Path, size: int) -> None:
    """With ``keep`` (training's later epochs), the photos kept are a copy: a batch changed in place by its user
    does not change what the next epoch reads."""

    paths = _bmp_files(tmp_path, size, 6, seed=size)
    want = torch.from_numpy(np.stack([read_image(p) for p in paths]))
    dataset = ImageDataset(paths, AsUint8(size), keep=True)
    first, _ = dataset.batch([4, 0, 2])
    torch.testing.assert_close(first, want[[4, 0, 2]], rtol=0, atol=0)
    first.zero_()
    again, _ = dataset.batch([0, 2, 4, 1])  # kept and not yet read together
    torch.testing.assert_close(again, want[[0, 2, 4, 1]], rtol=0, atol=0)
