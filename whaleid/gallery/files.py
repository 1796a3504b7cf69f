"""Reading and writing gallery folders safely: where a write may go (``--out`` is a new path or a gallery folder,
never a folder of someone else's files), the lock two writers share, and reading each file of a folder under one
line naming it when it is damaged."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from whaleid.core.atomic import folder_lock
from whaleid.core.errors import DataError, short_reason


def check_target(path: str | Path) -> None:
    """Refuse, in one line, to write a gallery over anything but a new path or another gallery folder (its
    manifest says so): replacing a folder swaps it whole, and would delete every file in it whaleid did not write."""
    target = Path(os.path.realpath(path))
    if target.exists() and not (target.is_dir() and (target / "manifest.json").is_file()):
        what = "a folder" if target.is_dir() else "a file"
        raise DataError(
            f"{path}: {what} that is not a gallery (no manifest.json); give a new path or a gallery folder, "
            "so that nothing else is replaced."
        )


@contextlib.contextmanager
def editing(source: str | Path, out: str | Path | None = None) -> Iterator[Path]:
    """Check the target (``out``, or ``source`` itself) and hold the lock of both folders while a gallery is read,
    changed and written back: a second ``gallery add`` on the same folder waits, then adds to what the first wrote.
    Yields the target."""
    target = Path(out or source)
    check_target(target)
    folders = sorted({os.path.realpath(source), os.path.realpath(target)})  # one order: no deadlock
    with contextlib.ExitStack() as stack:
        for folder in folders:
            stack.enter_context(folder_lock(folder))
        yield target


@contextlib.contextmanager
def damaged(path: Path) -> Iterator[None]:
    """Whatever reading one file of a gallery folder raises becomes one line naming the file (a truncated index,
    a broken zip, JSON that does not parse, a manifest block with unknown keys)."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(
            f"{path}: missing; the gallery folder is damaged, rebuild it with `dvc repro gallery`."
        ) from None
    except Exception as exc:  # noqa: BLE001 - any parse failure of a damaged file, reported as one line
        reason = short_reason(exc)
        raise DataError(
            f"{path}: damaged ({reason}); rebuild the gallery with `dvc repro gallery` or restore the folder."
        ) from None


def read_table(path: Path, columns: dict[str, type | None]) -> pd.DataFrame:
    """A CSV of the gallery folder with ``columns`` present (their dtypes as given)."""
    with damaged(path):
        frame = pd.read_csv(path, dtype={k: v for k, v in columns.items() if v}, keep_default_na=False)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"no column {', '.join(missing)}")
    return frame
