"""The user errors every stage turns into one clear line and exit status 2 (see :mod:`whaleid.cli.main`).

Each message names the file, row or ``block.key`` at fault and what to do about it.
"""

from __future__ import annotations


class WhaleidError(ValueError):
    """Base of the errors a user can fix (bad params, bad data, a diverged run)."""


class ConfigError(WhaleidError):
    """A params file or one of its values is invalid. The message names the key and the fix."""


class DataError(WhaleidError):
    """A dataset file is missing, malformed or inconsistent. The message names the file and row."""


class SubmissionError(WhaleidError):
    """The submission would be rejected by Kaggle or is inconsistent; the message names the row."""


class TrainingDiverged(WhaleidError):
    """The loss became NaN or infinite."""


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """A library exception's message as a short single line for one of our errors (a zip or faiss message may
    carry kilobytes of header bytes and line breaks); its type name when it says nothing."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
