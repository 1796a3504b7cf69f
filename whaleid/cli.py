"""Shared entry-point plumbing for the DVC stages: logging, params loading and friendly errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from whaleid.config import ConfigError, Params, load_params
from whaleid.data import DataError
from whaleid.log import setup_logging

log = logging.getLogger("whaleid")

PARAMS_ENV = "WHALEID_PARAMS"


def run_stage(name: str, body: Callable[[Params], None]) -> None:
    """Load ``params.yaml`` (or ``$WHALEID_PARAMS``), run ``body``; user errors exit 2 with one clear line."""
    from whaleid.submission import SubmissionError
    from whaleid.train import TrainingDiverged

    setup_logging()
    try:
        params = load_params(os.environ.get(PARAMS_ENV, "params.yaml"))
        body(params)
    except (ConfigError, DataError, SubmissionError, TrainingDiverged) as exc:
        log.error("%s stage failed: %s", name, exc)
        sys.exit(2)
    except KeyboardInterrupt:
        log.error("%s stage interrupted; outputs written so far are complete, rerun to continue.", name)
        sys.exit(130)
