"""The ``whaleid`` command, for what users run by hand (the DVC stages run through :mod:`whaleid.stage`).

* ``whaleid check [DATA_DIR]``: validate the params file and a dataset (every image decoded) without training;
* ``whaleid params``: the validated params, defaults filled in, as JSON;
* ``whaleid models``: which models the params train, use for CV and combine for the submission.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from whaleid.config import Params, load_params, member_fold, to_dict
from whaleid.errors import WhaleidError
from whaleid.log import setup_logging

log = logging.getLogger("whaleid")


def _models(params: Params) -> dict[str, object]:
    from whaleid.artifacts import cv_models, submission_models
    from whaleid.paths import model_path

    trained = [f"fold{params.fold}", *params.ensemble.members]
    return {
        "trained": {n: {"path": str(model_path(n)), "validation_fold": member_fold(n)} for n in trained},
        "cv": list(cv_models(params)),
        "submission": submission_models(params),
    }


def main(argv: list[str] | None = None) -> int:
    """The ``whaleid`` command."""
    parser = argparse.ArgumentParser(prog="whaleid", description="Photo-ID of individual animals (Happywhale layout).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate params and a dataset (every image decoded) without training")
    check.add_argument("data_dir", nargs="?", help="dataset folder (default: data.dir from the params file)")
    check.add_argument("--params", default="params.yaml", help="params file to validate")
    check.add_argument("--no-decode", action="store_true", help="skip decoding every image")
    for cmd, text in (("params", "print the validated params (defaults filled in) as JSON"),
                      ("models", "print which models the params train, use for CV and submit with")):  # fmt: skip
        p = sub.add_parser(cmd, help=text)
        p.add_argument("--params", default="params.yaml", help="params file")
    args = parser.parse_args(argv)
    if args.command == "check":
        from whaleid.check import run_checks

        return run_checks(args.data_dir, args.params, decode=not args.no_decode)
    setup_logging()
    try:
        params = load_params(args.params)
    except WhaleidError as exc:
        log.error("%s", exc)
        return 2
    print(json.dumps(to_dict(params) if args.command == "params" else _models(params), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
