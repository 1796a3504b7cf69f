"""Entry-point plumbing for the DVC stages (``python -m stages.<name>``): logging, params loading, friendly errors
and signals.

A user error (bad params, bad data, a diverged run) and a full, read-only or forbidden disk exit with status 2 and
one clear line. SIGINT (Ctrl-C) and
SIGTERM (`kill`, a scheduler's time limit) unwind the stage like an exception, so no output is left half-written
(every output is written atomically anyway) and training's last per-epoch checkpoint is kept for the rerun;
the exit status is 128 + the signal number, as a shell reports it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from collections.abc import Callable

from whaleid.config import load_params, member_fold
from whaleid.core.errors import WhaleidError
from whaleid.core.log import setup_logging
from whaleid.core.memory import tune_malloc

log = logging.getLogger("whaleid")

PARAMS_ENV = "WHALEID_PARAMS"

# Write failures that are the machine's state, not a bug: one line and what to do, never a traceback.
DISK_ERRORS = {
    errno.ENOSPC: "Free disk space (`df -h .`; `make clean-cache` drops whaleid's caches, `dvc gc -w` DVC's old "
    "versions) or store resized images smaller (`resize.format: png` or `jpg`), then rerun `dvc repro`.",
    errno.EDQUOT: "The disk quota is used up: free space or ask for a larger quota, then rerun `dvc repro`.",
    errno.EROFS: "The file system is read-only: run from a writable copy of the repository.",
    errno.EACCES: "Permission denied: make the repository's data/, models/, metrics/ and .whaleid_cache/ writable "
    "for this user.",
}


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where the process is, like SIGINT's KeyboardInterrupt."""


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def run_stage(name: str, body: Callable[..., None], takes_model: bool = False) -> None:
    """Load ``params.yaml`` (or ``$WHALEID_PARAMS``) and run ``body(params)``, or ``body(params, model)`` with
    ``takes_model`` (the model name, ``foldN`` or ``full``, is the command's one argument). User errors exit 2
    with one clear line."""
    setup_logging()
    tune_malloc()
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        args = [] if not takes_model else sys.argv[1:]
        if takes_model and len(args) != 1:
            raise WhaleidError(f"usage: python -m stages.{name} MODEL (foldN or full), got {args!r}")
        if takes_model:
            member_fold(args[0])
        params = load_params(os.environ.get(PARAMS_ENV, "params.yaml"))
        body(params, *args)
    except WhaleidError as exc:
        log.error("%s stage failed: %s", name, exc)
        sys.exit(2)
    except FileNotFoundError as exc:
        log.error(
            "%s stage failed: input %s is missing; run the stages before it (`dvc repro %s`).", name, exc.filename, name
        )
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = exc.filename or "an output"
        log.error(
            "%s stage failed: cannot write %s: %s. %s",
            name,
            where,
            exc.strerror or os.strerror(exc.errno),
            DISK_ERRORS[exc.errno],
        )
        sys.exit(2)
    except KeyboardInterrupt as exc:
        signum = signal.SIGTERM if isinstance(exc, Interrupted) else signal.SIGINT
        log.error(
            "%s stage stopped by %s; every output written so far is complete, and training resumes from "
            "its last epoch checkpoint: rerun `dvc repro`.",
            name,
            signal.Signals(signum).name,
        )
        sys.exit(128 + signum)
