"""Logging set-up for the stages: coloured level names on a terminal (colorama), plain text when piped."""

from __future__ import annotations

import logging
import sys

import colorama

_COLOURS = {
    logging.DEBUG: colorama.Fore.CYAN,
    logging.INFO: colorama.Fore.GREEN,
    logging.WARNING: colorama.Fore.YELLOW,
    logging.ERROR: colorama.Fore.RED,
    logging.CRITICAL: colorama.Fore.RED + colorama.Style.BRIGHT,
}


class _ColourFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        colour = _COLOURS.get(record.levelno, "")
        return text.replace(record.levelname, f"{colour}{record.levelname}{colorama.Style.RESET_ALL}", 1)


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once; colour only when stderr is a terminal."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if sys.stderr.isatty():
        colorama.just_fix_windows_console()
        handler.setFormatter(_ColourFormatter(fmt, datefmt="%H:%M:%S"))
    else:
        handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which CPU build it loads: noise on every run


def bar_options(per_batch: bool = False) -> dict[str, object]:
    """tqdm options for the terminal or a log file: live bars on a terminal; when stderr is piped (CI, ``dvc repro
    > log``), a per-batch bar is dropped (each epoch's log line says the same) and other bars update at most every
    30 seconds instead of several times a second, so a log holds a few lines per bar, not thousands."""
    if sys.stderr.isatty():
        return {}
    return {"disable": True} if per_batch else {"mininterval": 30.0, "maxinterval": 60.0}
