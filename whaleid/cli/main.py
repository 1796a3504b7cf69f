"""The ``whaleid`` command, for what users run by hand (the DVC stages run through :mod:`whaleid.pipeline.stage`).

* ``whaleid check [DATA_DIR]``: validate the params file and a dataset (every image decoded) without training;
* ``whaleid params``: the validated params, defaults filled in, as JSON;
* ``whaleid models``: which models the params train, use for CV and combine for the submission;
* ``whaleid summary``: the last run in one line (CV, LB MAP@5), from metrics/;
* ``whaleid exps``: the experiments in the few columns people compare, with CV averaged over folds;
* ``whaleid overrides FILE``: the ``-S key=value`` arguments that apply a params overrides file, e.g.
  ``dvc exp run $(whaleid overrides params/competition.yaml)``;
* ``whaleid identify PHOTO_OR_DIR ...``: the known individuals most like each photo, from the gallery (stage
  ``gallery``); ``whaleid gallery add|remove|info`` grows or trims a gallery without retraining;
* ``whaleid export [MODEL] --format onnx|torchscript``: the embedding network as one file (ONNX Runtime, TorchScript);
* ``whaleid convert-weights SRC DST --backbone NAME``: an ``efficientnet_pytorch`` checkpoint renamed to a timm
  backbone's names, saved as ``.safetensors`` for ``model.weights``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from whaleid.config import Params, load_params, member_fold, to_dict
from whaleid.core.errors import WhaleidError
from whaleid.core.log import setup_logging

log = logging.getLogger("whaleid")


def _models(params: Params) -> dict[str, object]:
    from whaleid.pipeline.artifacts import cv_models, submission_models
    from whaleid.pipeline.paths import model_path

    trained = [f"fold{params.fold}", *params.ensemble.members]
    return {
        "trained": {n: {"path": str(model_path(n)), "validation_fold": member_fold(n)} for n in trained},
        "cv": list(cv_models(params)),
        "submission": submission_models(params),
    }


def _convert(src: str, dst: str, backbone: str) -> int:
    from safetensors.torch import save_file

    from whaleid.core.atomic import atomic_path
    from whaleid.model.weights import convert_efficientnet_pytorch, read_state_dict

    setup_logging()
    try:
        state = read_state_dict(src, "convert-weights", "Give the efficientnet_pytorch checkpoint (.pth).")
        converted = convert_efficientnet_pytorch(state, backbone)
    except WhaleidError as exc:
        log.error("%s", exc)
        return 2
    with atomic_path(dst) as tmp:
        save_file({k: v.contiguous() for k, v in converted.items()}, str(tmp))
    log.info(
        "%s: %d tensors renamed for %s -> %s (use it as model.weights with model.backbone %s)",
        src,
        len(converted),
        backbone,
        dst,
        backbone,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``whaleid`` command."""
    if argv is None and hasattr(signal, "SIGPIPE"):  # `whaleid params | head`: exit quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(prog="whaleid", description="Photo-ID of individual animals (Happywhale layout).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate params and a dataset (every image decoded) without training")
    check.add_argument("data_dir", nargs="?", help="dataset folder (default: data.dir from the params file)")
    check.add_argument("--params", default="params.yaml", help="params file to validate")
    check.add_argument("--no-decode", action="store_true", help="skip decoding every image")
    sub.add_parser("summary", help="the last run in one line: CV and LB MAP@5 (from metrics/)")
    for cmd, text in (
        ("params", "print the validated params (defaults filled in) as JSON"),
        ("models", "print which models the params train, use for CV and submit with"),
    ):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("--params", default="params.yaml", help="params file")
    exps = sub.add_parser(
        "exps",
        help="experiments in a few columns (params that differ, CV/LB MAP@5) and CV averaged over fold experiments",
    )
    exps.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit")
    exps.add_argument("--json-file", help="read a saved `dvc exp show --json` output instead of running DVC")
    over = sub.add_parser(
        "overrides",
        help="print the `dvc exp run` -S arguments that apply a params overrides "
        "file (checked against params.yaml first)",
    )
    over.add_argument("file", help="overrides in the layout of params.yaml, e.g. params/competition.yaml")
    over.add_argument("--params", default="params.yaml", help="params file the overrides apply to")
    conv = sub.add_parser(
        "convert-weights",
        help="rename an efficientnet_pytorch checkpoint to timm names (.safetensors, for model.weights)",
    )
    conv.add_argument("src", help="efficientnet_pytorch state dict (.pth), e.g. efficientnet-lite0-57934424.pth")
    conv.add_argument("dst", help="output .safetensors file")
    conv.add_argument(
        "--backbone",
        required=True,
        help="timm model of the same architecture, e.g. "
        "tf_efficientnet_lite0 (efficientnet-lite0) or efficientnet_b0 (efficientnet-b0)",
    )
    from whaleid.cli.gallery import add_parsers, run

    add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command in ("identify", "gallery", "export"):
        return run(args)
    if args.command == "summary":
        from whaleid.core.atomic import read_json
        from whaleid.pipeline.paths import CV_METRICS, LB_METRICS
        from whaleid.rule.submission import run_summary

        setup_logging()
        try:
            print(run_summary(read_json(CV_METRICS), read_json(LB_METRICS).get("map5")))
        except FileNotFoundError as exc:
            log.error("%s is missing: run `dvc repro` first", exc.filename)
            return 2
        return 0
    if args.command == "exps":
        from whaleid.pipeline.exps import main as exps_main

        return exps_main(["-A"] * args.all_commits + (["--json-file", args.json_file] if args.json_file else []))
    if args.command == "convert-weights":
        return _convert(args.src, args.dst, args.backbone)
    if args.command == "overrides":
        from whaleid.config import override_args

        setup_logging()
        try:
            print(" ".join(override_args(args.file, args.params)))
        except WhaleidError as exc:
            log.error("%s", exc)
            return 2
        return 0
    if args.command == "check":
        from whaleid.pipeline.check import run_checks

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
