"""Image files: decoding to RGB uint8 and checking them, and the torch ``Dataset`` that reads them.

``read_image`` returns RGB uint8 whatever the file holds: grayscale, RGBA, CMYK and 16-bit images are converted,
and EXIF orientation is applied. A photo whose header claims more than ``data.max_megapixels`` is refused before
decoding, and a JPEG cut short (no end-of-image marker) is named, not decoded into a grey half. ``check_images``
decodes every file in parallel and names the unreadable ones.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from whaleid.core.errors import DataError
from whaleid.core.parallel import map_chunks
from whaleid.core.runtime import DEFAULT_MAX_MEGAPIXELS, Runtime
from whaleid.data.bmp import OPEN_FLAGS, bmp_header, decode_bmp24, read_bmp_batch


def _is_truncated_jpeg(data: bytes) -> bool:
    """True for a JPEG whose image data stops before its end-of-image marker. The header segments are walked by
    their lengths up to the first start-of-scan (an EXIF thumbnail inside APP1, with its own markers, is skipped);
    after it, the FF D9 marker must follow somewhere (byte stuffing keeps it out of the scan data). Bytes after the
    marker, which many phones and editors append, are fine."""
    if not data.startswith(b"\xff\xd8"):
        return False
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False  # not a marker where one should be: the decoder judges
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", i) < 0
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return True  # the file ends inside its header


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, without decoding; None when Pillow cannot tell. BMP (what the
    resize stage writes, read once per image per epoch) is parsed here directly, at a tenth of Pillow's cost."""
    bmp = bmp_header(data)
    if bmp is not None:
        return bmp[2], abs(bmp[3])
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # header only: Pillow's own bomb check would hide the size this function reports
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - unknown formats: the decoder judges
        return None


def decode_image(data: bytes, name: str = "<bytes>", max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """Decode image bytes to RGB uint8 (H, W, 3); raise :class:`DataError` naming ``name`` if impossible. A photo
    whose header claims more than ``max_megapixels`` is refused before decoding, so decoding never takes more
    than ``3 * max_megapixels`` MB (plus the file itself)."""
    if not data:
        raise DataError(f"{name}: the image file is empty.")
    if _is_truncated_jpeg(data):
        raise DataError(f"{name}: truncated JPEG (no end-of-image marker); re-download or remove this file.")
    bmp = bmp_header(data)  # parsed once for the size check and the decoder
    size = (bmp[2], abs(bmp[3])) if bmp is not None else image_size(data)
    if size is not None and size[0] * size[1] > max_megapixels * 1e6:
        raise DataError(
            f"{name}: {size[0]} x {size[1]} pixels, over data.max_megapixels ({max_megapixels:g} MP; "
            f"{3 * size[0] * size[1] / 1e9:.1f} GB decoded per worker); downscale it (the model sees a "
            "few hundred pixels) or raise data.max_megapixels."
        )
    if bmp is not None:
        img = decode_bmp24(data, bmp)
        if img is not None:
            return img
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # applies EXIF orientation, CMYK -> BGR
    except cv2.error as exc:
        raise DataError(f"{name}: OpenCV cannot decode the image ({str(exc).strip().splitlines()[-1]}).") from None
    if img is None:
        raise DataError(f"{name}: cannot decode the image (corrupt or unsupported format).")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def file_kind(path: str | Path) -> str | None:
    """None for a regular file (or a link to one); else what it is ("a FIFO", "a folder", ...). Reading a FIFO
    or a device would wait forever or never end: they are refused by type before any read."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing (or a broken link)"
    if stat.S_ISREG(mode):
        return None
    kinds = {
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISDIR: "a folder",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def read_photo_bytes(path: Path) -> bytes:
    """The bytes of an image file; DataError naming it if it is not a regular file or cannot be read.

    One open, fstat, read and close (4 system calls where ``Path.read_bytes`` after a ``stat`` makes 7: read per
    photo per epoch, they were a third of reading a resized photo). Opened non-blocking, so a FIFO is refused by
    its type instead of waiting for a writer."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        raise DataError(f"{path}: {file_kind(path)}, not an image file.") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image file: {exc.strerror}.") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{path}: {file_kind(path)}, not an image file.")
        chunks = []
        left = info.st_size
        while left > 0:  # one read for any photo; more only past the kernel's 2 GiB per call
            chunk = os.read(fd, left)
            if not chunk:
                break  # cut short while being read: the decoder names what is missing
            chunks.append(chunk)
            left -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image file: {exc.strerror}.") from None
    finally:
        os.close(fd)


def read_image(path: str | Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 (see :func:`decode_image`); non-ASCII paths work."""
    path = path if isinstance(path, Path) else Path(path)  # Path(a Path) parses it again: 1/4 of reading a photo
    return decode_image(read_photo_bytes(path), str(path), max_megapixels)


def _check_chunk(paths: list[Path], max_megapixels: float) -> list[tuple[str, str]]:
    out = []
    for p in paths:
        try:
            data = read_photo_bytes(p)
        except DataError as exc:
            out.append((str(exc), ""))
            continue
        try:
            decode_image(data, str(p), max_megapixels)
            out.append(("", hashlib.sha1(data).hexdigest()))
        except DataError as exc:
            out.append((str(exc), ""))
    return out


def check_images(paths: Sequence[Path], run: Runtime = Runtime()) -> tuple[list[str], list[str]]:
    """Decode every image in parallel. Returns one message per unreadable file (empty when all are fine) and
    the SHA-1 of every file's bytes ("" for unreadable ones), in the order of ``paths``."""
    results = map_chunks(
        _check_chunk,
        list(paths),
        run.max_megapixels,
        chunk_size=256,
        n_jobs=run.n_jobs,
        desc="check images",
        progress=run.progress,
    )
    return [e for e, _ in results if e], [d for _, d in results]


def same_photos(
    train_names: Sequence[str], train_digests: Sequence[str], test_names: Sequence[str], test_digests: Sequence[str]
) -> list[tuple[str, str]]:
    """(test image, train image) pairs whose files are byte for byte the same photo."""
    by_digest = {d: n for n, d in zip(train_names, train_digests, strict=True) if d}
    return [(t, by_digest[d]) for t, d in zip(test_names, test_digests, strict=True) if d in by_digest]


class ImageDataset:
    """Images with optional integer labels, each decoded and passed through ``transform`` (image -> tensor; see
    :mod:`whaleid.model.transforms`).

    ``labels`` is (N,) or (N, k) integers (e.g. individual and species); a row comes back as a tensor. A plain
    map-style dataset (torch.utils.data.DataLoader takes any object with ``__len__`` and ``__getitem__``), so that
    the stages that only read CSVs do not import torch.
    Items are indexed either by ``int`` or by ``(index, seed)``: with a seed the random transform is re-seeded
    for that item, so augmentation depends only on (seed, index), not on worker count or resume point.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        transform: Callable,
        labels: Sequence[int] | np.ndarray | None = None,
        keep: bool = False,
    ) -> None:
        self.paths = [p if isinstance(p, Path) else Path(p) for p in paths]  # Path(a Path) would parse it again
        # keep: remember each item's transformed image (a deterministic transform only, e.g. training's uint8
        # resize when augmentation runs on the device), so later epochs do not read and decode it again
        self.kept: dict[int, Any] | None = {} if keep else None
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(self.paths):
            raise ValueError("paths and labels differ in length")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, item: int | tuple[int, int]) -> Any:
        index, seed = item if isinstance(item, tuple) else (item, None)
        out = None if self.kept is None else self.kept.get(index)
        if out is None:
            img = read_image(self.paths[index])
            if seed is not None and hasattr(self.transform, "set_random_seed"):
                self.transform.set_random_seed(int(seed))
            out = self.transform(img)
            if self.kept is not None:
                self.kept[index] = out
        return out

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Any, Any]:
        out = self._image(item)
        if self.labels is None:
            return out, -1
        label = self.labels[item[0] if isinstance(item, tuple) else item]
        if label.ndim == 0:
            return out, int(label)
        import torch

        return out, torch.from_numpy(label.copy())

    def batch(self, items: Sequence[int | tuple[int, int]]) -> tuple[Any, Any]:
        """The items collated as a DataLoader collates them (images stacked, labels an int64 tensor, -1 without
        labels), read in this process without the DataLoader's per-item collation (see
        :class:`whaleid.core.device.InlineBatches`)."""
        import torch

        index = [item[0] if isinstance(item, tuple) else item for item in items]
        size = getattr(self.transform, "passthrough_size", None)
        if size is not None and (self.kept is None or not any(i in self.kept for i in index)):
            images = self._read_batch(index, items, size)
        else:
            images = torch.stack([self._image(item) for item in items])
        if self.labels is None:
            return images, torch.full((len(items),), -1, dtype=torch.int64)
        return images, torch.from_numpy(self.labels[index])

    def _read_batch(self, index: list[int], items: Sequence[int | tuple[int, int]], size: int) -> Any:
        """The batch of a transform that gives photos already ``size`` x ``size`` back as they are (the resized
        photos through :class:`whaleid.model.transforms.AsUint8`): read into one array by
        :func:`whaleid.data.bmp.read_bmp_batch`; a photo it cannot read goes through :meth:`_image` (decoded,
        resized, or named in the error)."""
        import torch

        array, unread = read_bmp_batch([os.fspath(self.paths[i]) for i in index], size)
        for j in unread:
            array[j] = self._image(items[j]).numpy()
        images = torch.from_numpy(array)
        if self.kept is not None:  # the kept rows are a copy: a caller may change the batch it is given in place
            held = images.clone()
            for j, i in enumerate(index):
                self.kept[i] = held[j]
        return images
