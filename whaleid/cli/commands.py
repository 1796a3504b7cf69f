"""The pipeline's sub-commands of ``whaleid`` (the gallery's: :mod:`whaleid.cli.gallery`):

* ``whaleid check [DATA_DIR]``: validate the params file and a dataset (every image decoded) without training;
* ``whaleid params``: the validated params, defaults filled in, as JSON;
* ``whaleid models``: which models the params train, use for CV and combine for the submission;
* ``whaleid summary``: the last run in one line (CV, LB MAP@5), from metrics/;
* ``whaleid exps``: the experiments in the few columns people compare, with CV averaged over folds;
* ``whaleid overrides FILE``: the ``-S key=value`` arguments that apply a params overrides file, e.g.
  ``dvc exp run $(whaleid overrides params/competition.yaml)``;
* ``whaleid report --individual ID``: one individual's match page (its photos, its validation queries, the
  queries it was wrongly put first for), beside the stage ``report``'s reports/matches.html;
* ``whaleid convert-weights SRC DST --backbone NAME``: an ``efficientnet_pytorch`` checkpoint renamed to a timm
  backbone's names, saved as ``.safetensors`` for ``model.weights``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from whaleid.config import Params, load_params, member_fold, to_dict

log = logging.getLogger("whaleid")


@dataclass(frozen=True)
class Command:
    """One ``whaleid`` sub-command: its help line, what adds its arguments, and what runs it (exit status)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _params_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file")


def _check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", nargs="?", help="dataset folder (default: data.dir from the params file)")
    p.add_argument("--params", default="params.yaml", help="params file to validate")
    p.add_argument("--no-decode", action="store_true", help="skip decoding every image")


def _check(args: argparse.Namespace) -> int:
    from whaleid.pipeline.check import run_checks

    return run_checks(args.data_dir, args.params, decode=not args.no_decode)


def _params(args: argparse.Namespace) -> int:
    print(json.dumps(to_dict(load_params(args.params)), indent=2))
    return 0


def _models(args: argparse.Namespace) -> int:
    from whaleid.pipeline.artifacts import cv_models, submission_models
    from whaleid.pipeline.paths import model_path

    params: Params = load_params(args.params)
    trained = [f"fold{params.fold}", *params.ensemble.members]
    models = {
        "trained": {n: {"path": str(model_path(n)), "validation_fold": member_fold(n)} for n in trained},
        "cv": list(cv_models(params)),
        "submission": submission_models(params),
    }
    print(json.dumps(models, indent=2))
    return 0


def _summary(args: argparse.Namespace) -> int:
    from whaleid.core.atomic import read_json
    from whaleid.pipeline.paths import CV_METRICS, LB_METRICS
    from whaleid.rule.submission import new_share_warning, run_summary

    cv, lb = read_json(CV_METRICS), read_json(LB_METRICS)
    new_ratio = load_params(args.params).cv.new_ratio if Path(args.params).is_file() else None
    print(run_summary(cv, lb.get("map5"), lb.get("new_first_share"), new_ratio))
    warning = new_ratio and new_share_warning(lb.get("new_first_share"), cv.get("valid_new_first_share"), new_ratio)
    if warning:
        log.warning("%s", warning)
    return 0


def _exps_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit")
    p.add_argument("--json-file", help="read a saved `dvc exp show --json` output instead of running DVC")


def _exps(args: argparse.Namespace) -> int:
    from whaleid.pipeline.exps import main as exps_main

    return exps_main(["-A"] * args.all_commits + (["--json-file", args.json_file] if args.json_file else []))


def _overrides_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="overrides in the layout of params.yaml, e.g. params/competition.yaml")
    p.add_argument("--params", default="params.yaml", help="params file the overrides apply to")


def _overrides(args: argparse.Namespace) -> int:
    from whaleid.config import override_args

    print(" ".join(override_args(args.file, args.params)))
    return 0


def _convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="efficientnet_pytorch state dict (.pth), e.g. efficientnet-lite0-57934424.pth")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument(
        "--backbone",
        required=True,
        help="timm model of the same architecture, e.g. "
        "tf_efficientnet_lite0 (efficientnet-lite0) or efficientnet_b0 (efficientnet-b0)",
    )


def _convert(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from whaleid.core.atomic import atomic_path
    from whaleid.model.weights import convert_efficientnet_pytorch, read_state_dict

    state = read_state_dict(args.src, "convert-weights", "Give the efficientnet_pytorch checkpoint (.pth).")
    converted = convert_efficientnet_pytorch(state, args.backbone)
    with atomic_path(args.dst) as tmp:
        save_file({k: v.contiguous() for k, v in converted.items()}, str(tmp))
    log.info("%s: %d tensors renamed for %s -> %s (use it as model.weights with model.backbone %s)", args.src,
             len(converted), args.backbone, args.dst, args.backbone)  # fmt: skip
    return 0


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--individual", required=True, metavar="ID", help="the individual_id to show (train.csv)")
    p.add_argument("--params", default="params.yaml", help="params file (fold, resize.format)")
    p.add_argument("--out", help="HTML file to write (default reports/individuals/ID.html)")


def _report(args: argparse.Namespace) -> int:
    import difflib
    import re

    from whaleid.core.atomic import write_text
    from whaleid.core.errors import DataError
    from whaleid.pipeline.paths import MATCH_REPORT
    from whaleid.pipeline.report import validation_view
    from whaleid.rule.report import GENERATOR, individual_sections, render

    params = load_params(args.params)
    view = validation_view(params)
    if args.individual not in view.classes:
        close = difflib.get_close_matches(args.individual, view.classes, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see the individual_id column of train.csv)"
        raise DataError(f"--individual {args.individual!r} is not an individual of the training data{hint}")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", args.individual)
    out = Path(args.out) if args.out else MATCH_REPORT.parent / "individuals" / f"{safe}.html"
    if out.is_dir() or (out.exists() and GENERATOR not in out.read_text(errors="replace")[:200]):
        raise DataError(f"--out {out} exists and is not a whaleid report page; give a new path")
    summary, photos, sections = individual_sections(args.individual, **view.arguments())
    title = f"whaleid individual {args.individual}: validation fold {params.fold}"
    write_text(out, render(title, summary, sections, photos=(f"Its {len(photos)} gallery photos", photos)))
    print(summary.split(". ")[0] + ".")
    print(f"{out}: open it in a browser")
    return 0


COMMANDS = {
    "check": Command("validate params and a dataset (every image decoded) without training", _check_arguments, _check),
    "params": Command("print the validated params (defaults filled in) as JSON", _params_file, _params),
    "models": Command("print which models the params train, use for CV and submit with", _params_file, _models),
    "summary": Command(
        "the last run in one line: CV and LB MAP@5 and the shares given new_individual first (from metrics/)",
        lambda p: p.add_argument("--params", default="params.yaml", help="params file (for cv.new_ratio)"),
        _summary,
    ),
    "exps": Command(
        "experiments in a few columns (params that differ, CV/LB MAP@5) and CV averaged over fold experiments",
        _exps_arguments,
        _exps,
    ),
    "overrides": Command(
        "print the `dvc exp run` -S arguments that apply a params overrides file (checked against params.yaml first)",
        _overrides_arguments,
        _overrides,
    ),
    "report": Command(
        "one individual's page: its photos, its validation queries and who it is confused with (HTML)",
        _report_arguments,
        _report,
    ),
    "convert-weights": Command(
        "rename an efficientnet_pytorch checkpoint to timm names (.safetensors, for model.weights)",
        _convert_arguments,
        _convert,
    ),
}
