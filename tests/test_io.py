"""Atomic outputs: modes follow the umask, and what a killed writer left behind is cleaned at the next write
(only a dead process's leftovers; a live writer's temporaries are not touched)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np

from whaleid.core.atomic import atomic_dir, save_npz, write_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "d") as tmp:
            save_npz(tmp / "x.npz", x=np.zeros(2))
        assert mode(tmp_path / "a.json") == 0o644 and mode(tmp_path / "d") == 0o755
        assert mode(tmp_path / "d" / "x.npz") == 0o644
        os.umask(0o077)
        write_text(tmp_path / "b.json", "{}")
        assert mode(tmp_path / "b.json") == 0o600
    finally:
        os.umask(old)


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_leftovers_of_a_killed_writer_are_removed_at_the_next_write(tmp_path: Path) -> None:
    gone, alive = dead_pid(), os.getppid()
    leftovers = [
        tmp_path / f".model.pt.{gone}.abc123.tmp",
        tmp_path / f".resized.{gone}.xyz.tmp",
        tmp_path / f".resized.old.{gone}",
    ]
    leftovers[0].write_bytes(b"half a model")
    leftovers[1].mkdir()
    (leftovers[1] / "img.bmp").write_bytes(b"x")
    leftovers[2].mkdir()
    live = tmp_path / f".model.pt.{alive}.def456.tmp"  # another process still writing: keep
    live.write_bytes(b"in progress")
    unrelated = tmp_path / ".other.pt.1.tmp"
    unrelated.write_bytes(b"")
    write_text(tmp_path / "model.pt", "new")
    with atomic_dir(tmp_path / "resized") as tmp:
        (tmp / "a").write_text("a")
    assert not any(p.exists() for p in leftovers)
    assert live.exists() and unrelated.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name, "model.pt", "resized"])


def test_writing_many_files_into_one_folder_lists_it_once(tmp_path: Path, monkeypatch) -> None:
    # A per-file scan of the folder for stale temporaries made writing n files O(n^2) (the resize stage at
    # competition scale); the folder is listed once per process however many files are written into it.
    import whaleid.core.atomic as wio

    listed: list[str] = []
    real = os.scandir

    def counting(path=".") -> object:
        listed.append(os.path.realpath(path))
        return real(path)

    monkeypatch.setattr(wio.os, "scandir", counting)
    for i in range(200):
        write_text(tmp_path / "many" / f"{i}.txt", str(i))
    with atomic_dir(tmp_path / "many" / "sub") as tmp:
        for i in range(50):
            write_text(tmp / f"{i}.txt", str(i))
    assert listed.count(os.path.realpath(tmp_path / "many")) == 1
    assert sorted(p.name for p in (tmp_path / "many" / "sub").iterdir()) == sorted(f"{i}.txt" for i in range(50))
    assert len(list((tmp_path / "many").glob("*.txt"))) == 200


def test_a_swap_cut_between_its_renames_is_put_back_not_deleted(tmp_path: Path) -> None:
    # The folder swap renames the old folder to .NAME.old.PID, then the new one into place; a writer killed
    # between the two leaves no NAME: the next writer restores the backup instead of deleting it.
    from whaleid.core.atomic import clean_stale

    gone = dead_pid()
    backup = tmp_path / f".gallery.old.{gone}"
    backup.mkdir()
    (backup / "manifest.json").write_text("{}")
    half = tmp_path / f".gallery.{gone}.k2j4x9ab.tmp"
    half.mkdir()
    clean_stale(tmp_path)
    assert (tmp_path / "gallery" / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]
    # With the folder present the swap had finished: the backup is only a leftover.
    backup.mkdir()
    clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]


KILLED_WRITER = """
import os, shutil, sys
from pathlib import Path
from whaleid.core import atomic

kill_at, calls = int(sys.argv[2]), [0]


def point():
    calls[0] += 1
    if calls[0] == kill_at:
        os._exit(137)  # as SIGKILL: no cleanup, no finally


def counted(real):
    def call(*args, **kwargs):
        point()
        return real(*args, **kwargs)
    return call


os.replace, os.chmod, shutil.rmtree = counted(os.replace), counted(os.chmod), counted(shutil.rmtree)
with atomic.atomic_dir(sys.argv[1]) as tmp:
    for i in range(3):
        point()
        (tmp / f"{i}.txt").write_text("new")
"""


def _contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_a_folder_swap_killed_at_each_step_reads_old_or_new_and_the_next_write_lands(tmp_path: Path) -> None:
    # Kill the writer at each of its steps in turn (every file written into the temporary, the chmod, both
    # renames, both removals) until one runs to the end: at every cut the folder reads whole as the old one or the
    # new one (readers put a stranded backup back), and the next write lands with nothing left beside it.
    from whaleid.core.atomic import restore_swap

    old, new = {f"{i}.txt": "old" for i in range(2)}, {f"{i}.txt": "new" for i in range(3)}
    seen, kill_at = [], 1
    while True:
        root = tmp_path / str(kill_at)
        target = root / "gallery"
        target.mkdir(parents=True)
        for name, text in old.items():
            (target / name).write_text(text)
        proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), str(kill_at)], capture_output=True)
        restore_swap(target)
        state = _contents(target)
        assert state in (old, new), (kill_at, state)
        seen.append("new" if state == new else "old")
        if proc.returncode == 0:
            break
        assert proc.returncode == 137, proc.stderr
        with atomic_dir(target) as tmp:
            (tmp / "next.txt").write_text("next")
        assert _contents(target) == {"next.txt": "next"}
        assert [p.name for p in root.iterdir()] == ["gallery"], (kill_at, list(root.iterdir()))
        kill_at += 1
    # 3 file writes, chmod, 2 renames, 2 removals: every cut before the second rename reads old, after it new.
    assert len(seen) == 9 and seen == ["old"] * 6 + ["new"] * 3, seen


def test_damaged_json_and_npz_are_one_line_naming_the_file(tmp_path: Path) -> None:
    import pytest

    from whaleid.core.atomic import load_npz, read_json
    from whaleid.core.errors import DataError

    (tmp_path / "cut.json").write_text('{"threshold": 0.3')
    with pytest.raises(DataError, match=r"cut.json: not valid JSON \(Expecting ',' delimiter, line 1 column 18\)"):
        read_json(tmp_path / "cut.json")
    (tmp_path / "latin.json").write_bytes(b'{"id": "caf\xe9"}')
    with pytest.raises(DataError, match="latin.json: not valid JSON"):
        read_json(tmp_path / "latin.json")
    save_npz(tmp_path / "a.npz", x=np.arange(1000.0))
    data = (tmp_path / "a.npz").read_bytes()
    for name, blob in (("cut.npz", data[: len(data) // 2]), ("text.npz", b"not a zip")):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(DataError, match=rf"{name}: damaged \.npz"):
            load_npz(tmp_path / name)
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))  # needs pickle: refused, not run
    with pytest.raises(DataError, match="objects.npz: damaged .npz"):
        load_npz(tmp_path / "objects.npz")
    with pytest.raises(FileNotFoundError):  # missing stays missing: the stage runner names the stage to run
        load_npz(tmp_path / "absent.npz")


def test_a_full_disk_or_a_denied_folder_names_the_output_not_its_temporary(tmp_path: Path, monkeypatch) -> None:
    import errno
    import tempfile

    import pytest

    from whaleid.core.atomic import atomic_path

    out = tmp_path / "submission.csv"
    with pytest.raises(OSError) as full, atomic_path(out) as tmp:
        tmp.write_text("image,predictions\n")
        raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises: no file name
    assert (full.value.errno, full.value.filename) == (errno.ENOSPC, str(out))
    with pytest.raises(OSError) as full_dir, atomic_dir(tmp_path / "gallery") as folder:
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "index.faiss"))
    assert full_dir.value.filename == str(tmp_path / "gallery")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary left

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".submission.csv.1.x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(OSError) as refused, atomic_path(out):
        pass
    assert (refused.value.errno, refused.value.filename) == (errno.EACCES, str(out))
    # An input that is missing is not renamed after the output.
    with pytest.raises(FileNotFoundError), atomic_dir(tmp_path / "other"):
        (tmp_path / "absent.csv").read_text()


def test_npz_files_load_as_numpy_writes_them_and_their_headers_do_not_depend_on_python() -> None:
    import io
    import struct
    import zipfile

    import pytest

    from whaleid.core.atomic import npz_bytes

    arrays = {"f": np.arange(12.0).reshape(3, 4), "s": np.array(["a", "bcd"]), "b": np.array([True]), "z": np.int64(7)}
    data = npz_bytes(**arrays)
    with np.load(io.BytesIO(data), allow_pickle=False) as got:
        assert list(got.files) == list(arrays)
        for key, want in arrays.items():
            assert got[key].dtype == np.asarray(want).dtype and np.array_equal(got[key], want)
    reference = io.BytesIO()  # what numpy itself writes: the same .npy members, byte for byte
    np.savez(reference, **arrays)
    with zipfile.ZipFile(io.BytesIO(data)) as ours, zipfile.ZipFile(reference) as theirs:
        assert [ours.read(i) for i in ours.infolist()] == [theirs.read(i) for i in theirs.infolist()]
        for info in ours.infolist():
            # The fields np.savez's streamed write sets differently across Python patch releases: here always a
            # version-2.0 local header with the real sizes and no data descriptor (flag bit 3), at a fixed date.
            header = data[info.header_offset : info.header_offset + 30]
            signature, version, flags = struct.unpack("<IHH", header[:8])
            csize, usize = struct.unpack("<II", header[18:26])
            assert signature == 0x04034B50 and version == 20 and not flags & 0x08
            assert csize == usize == info.file_size and info.date_time == (1980, 1, 1, 0, 0, 0)
    assert npz_bytes(**arrays) == data
    with pytest.raises(TypeError, match="dtype object"):
        npz_bytes(bad=np.array([{"a": 1}], dtype=object))
