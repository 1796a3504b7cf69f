"""Uncompressed 24-bit BMP, the format the ``resize`` stage writes and every epoch reads: the header parsed
directly, the pixel rows decoded without a codec, and a whole batch of same-size photos read straight into one
array.

Anything else (another bit depth, a palette, compression, a short file, another size) is left to the general
decoder in :mod:`whaleid.data.images`, which converts it or names what is wrong.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import cv2
import numpy as np

# A BMP's file header and the start of its info header: magic, file size, (reserved), pixel offset, info header
# size, width, height (negative: rows stored top down), planes, bits per pixel, compression
HEADER = struct.Struct("<2sI4xIIiiHHI")
PLAIN_OFFSET = 54  # a file header (14 bytes) and a BITMAPINFOHEADER (40): where OpenCV's 24-bit BMPs start
# how photos are opened (here and by whaleid.data.images): non-blocking, so that a FIFO is refused by its type
# instead of waiting for a writer
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)


def bmp_header(data: bytes) -> tuple[int, int, int, int, int, int] | None:
    """(pixel offset, info header size, width, height, bits per pixel, compression) of a BMP with a
    BITMAPINFOHEADER or a later one (what OpenCV and Pillow write), unpacked in one call; None for anything else."""
    if len(data) < HEADER.size or data[:2] != b"BM":
        return None
    _, _, offset, header, width, height, _, bits, compression = HEADER.unpack_from(data)
    return (offset, header, width, height, bits, compression) if header >= 40 else None


def decode_bmp24(data: bytes, header: tuple[int, int, int, int, int, int] | None = None) -> np.ndarray | None:
    """RGB uint8 of an uncompressed 24-bit BMP straight from its pixel rows, the same array as OpenCV's decoder at
    about half its cost; None for any other BMP (palette, 32-bit, compressed, short), which OpenCV then decodes or
    refuses. ``header``: :func:`bmp_header` of ``data`` when known."""
    header = header or bmp_header(data)
    if header is None:
        return None
    offset, size, width, height, bits, compression = header
    stride = (width * 3 + 3) // 4 * 4  # rows are padded to 4 bytes
    if bits != 24 or compression != 0 or width <= 0 or height == 0 or offset < 14 + size:
        return None
    if offset + stride * abs(height) > len(data):
        return None
    rows = np.frombuffer(data, np.uint8, count=stride * abs(height), offset=offset).reshape(abs(height), stride)
    img = cv2.cvtColor(rows[:, : width * 3].reshape(abs(height), width, 3), cv2.COLOR_BGR2RGB)
    return cv2.flip(img, 0, dst=img) if height > 0 else img  # a positive height stores the bottom row first


def read_bmp_batch(paths: Sequence[str], size: int) -> tuple[np.ndarray, list[int]]:
    """Read ``size`` x ``size`` 24-bit BMPs into one RGB uint8 (len(paths), size, size, 3) array; return it and
    the positions of the photos this could not read (any other file: its row is left for the caller to fill).

    Each file's header and pixel rows are read by one ``readv`` system call into a header buffer and the photo's
    own row of the batch (no bytes object, no per-photo array, no stacking); the rows, stored bottom up and
    blue first, are put right with two whole-batch operations. For 3,200 photos at 96 px on 2 cores this is about
    a third of the cost of decoding them one by one (``python -m bench.embed``). Photos whose rows are padded
    (``size * 3`` not a multiple of 4) are all returned as unread."""
    n = len(paths)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    if size * 3 % 4:
        return out, list(range(n))
    expected = PLAIN_OFFSET + size * size * 3
    header = bytearray(PLAIN_OFFSET)
    # photo i goes to row n - 1 - i: flipping the batch as one tall image then reverses both the photos' order
    # and each photo's rows
    rows = out.reshape(n, -1)
    unread = []
    for i, path in enumerate(paths):
        try:
            fd = os.open(path, OPEN_FLAGS)
        except OSError:
            unread.append(i)
            continue
        try:
            got = os.readv(fd, [header, rows[n - 1 - i]])
        except OSError:  # a folder, a FIFO without a writer, ...
            got = -1
        finally:
            os.close(fd)
        # pixel offset, info header size, width, height (positive: bottom up), bits per pixel, compression
        if got != expected or bmp_header(header) != (PLAIN_OFFSET, 40, size, size, 24, 0):
            unread.append(i)
    if n:
        tall = out.reshape(n * size, size, 3)
        cv2.flip(tall, 0, dst=tall)
        cv2.cvtColor(tall, cv2.COLOR_BGR2RGB, dst=tall)
    return out, unread
