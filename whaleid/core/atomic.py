"""Atomic file output: everything is written to a temporary sibling, flushed, then renamed into place.

A reader (or DVC) therefore never sees a half-written model, embedding, metric or submission, and a process
killed mid-write leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from whaleid.core.errors import DataError, short_reason

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# What a killed writer leaves beside its output: ``.<name>.<pid>.<random>.tmp`` (mkstemp/mkdtemp) and, from a
# folder swap cut between its two renames, ``.<name>.old.<pid>``.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_BACKUP = re.compile(r"^\.(?P<name>.+)\.old\.(?P<pid>\d+)$")
_cleaned: set[tuple[int, str]] = set()  # (pid, folder) pairs this process has cleaned


def clean_stale(folder: Path) -> None:
    """Remove what killed writers left in ``folder``, in one listing of it: temporaries and swap backups whose
    process is gone (a live process's are left alone). A backup whose folder is missing (the swap was cut between
    its renames) is put back in its place instead of being deleted."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        backup = _BACKUP.match(entry.name)
        match = backup or _TEMPORARY.match(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        leftover = Path(entry.path)
        if backup is not None and entry.is_dir(follow_symlinks=False) and not (folder / match["name"]).exists():
            os.replace(leftover, folder / match["name"])
        elif entry.is_dir(follow_symlinks=False):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def restore_swap(path: str | Path) -> bool:
    """Put back the folder ``path`` from a swap backup a killed writer stranded (``.NAME.old.PID`` of a dead
    process, with ``path`` missing); True if one was put back. Readers call it, so a folder swap cut between its
    renames reads as the old folder at once, not only after the next write. Nothing is deleted."""
    path = _through_links(path)
    if path.exists():
        return False
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return False
    for entry in entries:
        backup = _BACKUP.match(entry.name)
        ours = backup and backup["name"] == path.name and entry.is_dir(follow_symlinks=False)
        if ours and not _alive(int(backup["pid"])):
            os.replace(entry.path, path)
            return True
    return False


def _clean_once(folder: Path) -> None:
    """:func:`clean_stale` on ``folder`` the first time this process writes there: once per folder, never once per
    file (writing n files into one folder would otherwise list it n times: quadratic)."""
    key = (os.getpid(), os.path.realpath(folder))
    if key not in _cleaned:
        clean_stale(folder)
        _cleaned.add(key)


def _through_links(path: str | Path) -> Path:
    """``path`` made absolute, symbolic links resolved: a write replaces what a link points to, never the link
    (``.`` and ``..`` name their folder, which a swap beside it needs)."""
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def folder_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on folder ``path`` (a ``.NAME.lock`` file beside it: the folder itself is swapped
    whole) while reading, changing and writing it back, so two processes never both change it from the same old
    copy: the second waits for the first, then reads what the first wrote. Advisory (``flock``): every whaleid
    writer of a shared folder takes it."""
    path = _through_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another whaleid process is writing it; waiting for it to finish", path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically (mode by the umask,
    as a plain ``open`` would give). What killed earlier writers left in the folder is cleaned first (once per
    folder and process: :func:`clean_stale`). A full disk or a read-only folder is reported as an OSError naming
    ``path``, not the temporary."""
    path = _through_links(path)
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_once(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # the machine's state: always about the output being written
_DENIED = {errno.EACCES, errno.EPERM}


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Re-raise a write failure (disk full, quota, read-only, permission) of ``path``'s temporary, or one that
    names no file (a ``write`` on a full disk), as an OSError naming ``path`` itself: the file the user knows."""
    try:
        yield
    except OSError as exc:
        ours = exc.filename is None or Path(exc.filename).parent == path.parent or Path(exc.filename) == path
        if exc.errno in _FULL or (exc.errno in _DENIED and ours):
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from None
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON file whaleid wrote; one that does not parse (cut short, edited by hand) is a DataError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}).") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid JSON (not UTF-8 text).") from None


def write_csv(path: str | Path, frame: Any) -> None:
    """Write a pandas DataFrame without its index, atomically."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    write_text(path, buf.getvalue())


NPZ_DATE = (1980, 1, 1, 0, 0, 0)  # every member's zip timestamp: the same arrays give the same bytes


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """The bytes of an uncompressed ``.npz`` of ``arrays`` (what ``np.load`` reads, as ``np.savez`` writes it).
    Each member is written whole with a fixed timestamp rather than streamed as ``np.savez`` does, whose headers
    depend on the Python patch release (3.11.7 writes ZIP64 local headers, Debian's 3.11.2 does not): the same
    arrays give the same bytes on any Python, so DVC's hashes of whaleid's outputs do not change with it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, arr in arrays.items():
            arr = np.asanyarray(arr)
            if arr.dtype == object:
                raise TypeError(f"array {name!r} has dtype object; convert strings with np.asarray(x, dtype=str)")
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=NPZ_DATE), member.getvalue())
    return buf.getvalue()


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Save arrays to ``.npz`` atomically (:func:`npz_bytes`). Object arrays are refused so the file always loads
    with ``allow_pickle=False``."""
    write_bytes(path, npz_bytes(**arrays))


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically. Serialised in memory first: saving to the temporary file directly would name the
    archive's records after its random name, and the same model would give different bytes on every run."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` (never unpickles); a damaged one (cut short, not a zip, an object array) is
    a DataError naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile and numpy raise many types on a damaged file
        raise DataError(
            f"{path}: damaged .npz ({short_reason(exc)}); rebuild it by rerunning the stage that wrote it."
        ) from None


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` as a whole (mode by the
    umask). What killed earlier writers left in the folder is cleaned first (:func:`clean_stale`). A symbolic link
    is written through: its target is replaced, the link stays. At every instant between the two renames either
    ``path`` or its backup ``.NAME.old.PID`` holds the old folder, and the next writer puts a stranded backup back."""
    path = _through_links(path)
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_once(path.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old.{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
