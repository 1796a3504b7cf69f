"""The gallery's sub-commands of ``whaleid``: ``identify``, ``export`` and ``gallery add|remove|info``, the
command-line side of :mod:`whaleid.gallery` and :mod:`whaleid.model.export`.

* ``whaleid identify PHOTO_OR_DIR ...``: the known individuals most like each photo, from the gallery (stage
  ``gallery``); ``whaleid gallery add|remove|info`` grows or trims a gallery without retraining;
* ``whaleid export [MODEL] --format onnx|torchscript``: the embedding network as one file (ONNX Runtime,
  TorchScript).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from whaleid.cli.commands import Command
from whaleid.core.errors import DataError
from whaleid.core.runtime import Runtime
from whaleid.data.layout import read_csv, safe_name
from whaleid.pipeline.paths import GALLERY_DIR

log = logging.getLogger("whaleid.gallery")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def photo_paths(items: list[str]) -> list[Path]:
    """The photos named by ``items``: files as given, folders by their image files (sorted, not recursive)."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such photo or folder.")
    if not out:
        raise DataError(f"no photos in {', '.join(items)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    return out


def _identify_arguments(ident: argparse.ArgumentParser) -> None:
    ident.add_argument("photos", nargs="+", help="photo files or folders of photos")
    ident.add_argument("--gallery", default=str(GALLERY_DIR), help="gallery folder (default: gallery/, stage gallery)")
    ident.add_argument(
        "--boxes",
        help="CSV image,x1,y1,x2,y2 to crop the photos to (pixels of the photo); photos "
        "it leaves out are boxed by the gallery's detector when stage detect trained one",
    )
    ident.add_argument(
        "--top-k",
        type=int,
        default=5,
        help="known individuals listed per photo, best first (default 5; the five predictions stay five)",
    )
    ident.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")
    ident.add_argument("--out", help="write the result to this file instead of printing it")
    ident.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ident.add_argument("--keep-going", action="store_true", help="exit 0 even when some photos were skipped")
    ident.add_argument("--timing", action="store_true", help="log how long opening the gallery and identifying took")
    ident.add_argument(
        "--exported",
        nargs="+",
        help="embed with these `whaleid export` files (one per gallery model, in order) instead of the PyTorch models",
    )


def _export_arguments(exp: argparse.ArgumentParser) -> None:
    exp.add_argument("model", nargs="?", default="models/fold0/model.pt", help="model.pt (default models/fold0)")
    exp.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="file format")
    exp.add_argument("--out", help="output file (default: next to the model, model.onnx or model.ts)")
    exp.add_argument(
        "--flip-tta",
        action="store_true",
        help="embed each photo and its mirror image (set it as embed.flip_tta was set for the gallery)",
    )


def _add_arguments(add: argparse.ArgumentParser) -> None:
    add.add_argument("photos", nargs="*", help="photo files or folders (with --id)")
    add.add_argument("--id", help="the individual_id of every photo given")
    add.add_argument("--species", default="", help="species of a new individual (for per-species thresholds)")
    add.add_argument("--csv", help="CSV image,individual_id[,species]; images are looked up in --images")
    add.add_argument("--images", help="folder of the --csv photos")
    add.add_argument(
        "--boxes", help="CSV image,x1,y1,x2,y2 to crop the photos to (else the gallery's detector, if any)"
    )
    add.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _remove_arguments(rm: argparse.ArgumentParser) -> None:
    rm.add_argument("--image", action="append", default=[], help="photo file name (repeatable)")
    rm.add_argument("--id", action="append", default=[], help="individual_id (repeatable)")


def _runtime(args: argparse.Namespace) -> Runtime:
    """Progress bars on a terminal; the device checked now (``cuda`` without a GPU is refused before any work)."""
    run = Runtime(progress=sys.stderr.isatty(), device=getattr(args, "device", "cpu"))
    run.torch_device()
    return run


def _boxes(path: str | None, photos: list[Path] | None = None) -> dict | None:
    """The --boxes CSV; with ``photos``, a warning when it covers none or only some of them (the others are
    boxed by the gallery's detector, or used whole), so a CSV for other photos is not silently ignored."""
    from whaleid.data.boxes import read_boxes

    if not path:
        return None
    boxes = read_boxes(path)
    if photos:
        covered = sum(p.name in boxes for p in photos)
        if covered < len(photos):
            log.warning(
                "--boxes %s covers %d of the %d photo(s) (by file name); the others are boxed by the gallery's "
                "detector when it has one, else used whole",
                path,
                covered,
                len(photos),
            )
    return boxes


def _identify(args: argparse.Namespace) -> int:
    import time

    from whaleid.gallery.identify import Identifier, readable

    started = time.perf_counter()
    if args.top_k < 1:
        raise DataError(f"--top-k must be at least 1, got {args.top_k}.")
    run = _runtime(args)
    photos = photo_paths(args.photos)
    good, errors = readable(photos, run)
    for e in errors:
        log.error("skipped: %s", e)
    if not good:
        raise DataError("no readable photo to identify.")
    exported = [Path(p) for p in args.exported] if args.exported else None
    ident = Identifier.open(args.gallery, run, exported)
    loaded = time.perf_counter()
    result = ident.identify(good, boxes=_boxes(args.boxes, good), top_k=args.top_k)
    done = time.perf_counter()
    if args.format == "json":
        text = json.dumps(result.to_dict(orient="records"), indent=2) + "\n"
    else:
        flat = result.assign(
            candidates=[" ".join(f"{c['individual_id']}:{c['score']:.4f}" for c in row) for row in result["candidates"]]
        )
        if args.format == "csv":
            text = flat.drop(columns=["box"]).to_csv(index=False, lineterminator="\n")
        else:
            text = "".join(f"{r.image}: {r.predictions}\n    candidates {r.candidates}\n" for r in flat.itertuples())
    if args.out:
        from whaleid.core.atomic import write_text

        write_text(args.out, text)
        log.info("wrote %s (%d photos)", args.out, len(result))
    else:
        sys.stdout.write(text)
    if args.timing:
        log.info(
            "timing: %.2f s to read the photos and open the gallery (models loaded once), %.2f s to identify %d "
            "photo(s) (%.0f ms each), %.2f s since the command started its work",
            loaded - started,
            done - loaded,
            len(good),
            1000 * (done - loaded) / len(good),
            done - started,
        )
    if errors and not args.keep_going:
        log.error(
            "%d of %d photo(s) skipped (see above); --keep-going accepts that with exit status 0",
            len(errors),
            len(photos),
        )
        return 1
    return 0


def _add(args: argparse.Namespace) -> int:
    from whaleid.gallery.files import editing
    from whaleid.gallery.folder import Gallery
    from whaleid.gallery.identify import add_photos

    if args.csv:
        if args.id or args.photos or not args.images:
            raise DataError("give either --csv FILE --images DIR, or photos with --id NAME.")
        frame = read_csv(Path(args.csv), ("image", "individual_id"), optional=("species",))
        paths = [Path(args.images) / safe_name(n, f"{args.csv}:{i + 2}") for i, n in enumerate(frame["image"])]
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise DataError(f"{absent[0]}: listed in {args.csv} but not found ({len(absent)} missing).")
        ids, species = list(frame["individual_id"]), list(frame.get("species", [""] * len(frame)))
    else:
        if not args.id or not args.photos:
            raise DataError("give photos with --id NAME (or --csv FILE --images DIR for many individuals).")
        paths = photo_paths(args.photos)
        ids, species = [args.id] * len(paths), [args.species] * len(paths)
    with editing(args.gallery, args.out) as target:
        gallery = Gallery.load(args.gallery)
        out = add_photos(
            gallery,
            paths,
            ids,
            species=species,
            boxes=_boxes(args.boxes),
            run=_runtime(args),
        )
        out.save(target)
    log.info(
        "%s: added %d photo(s) of %d individual(s); now %d photos of %d individuals",
        target,
        len(paths),
        len(set(ids)),
        len(out.photos),
        out.photos["individual_id"].nunique(),
    )
    return 0


def _remove(args: argparse.Namespace) -> int:
    from whaleid.gallery.files import editing
    from whaleid.gallery.folder import Gallery, remove_photos

    if not args.image and not args.id:
        raise DataError("name what to remove: --image NAME or --id INDIVIDUAL (repeatable).")
    with editing(args.gallery, args.out) as target:
        gallery = Gallery.load(args.gallery)
        out = remove_photos(gallery, args.image, args.id)
        out.save(target)
    log.info(
        "%s: removed %d photo(s); now %d photos of %d individuals",
        target,
        len(gallery.photos) - len(out.photos),
        len(out.photos),
        out.photos["individual_id"].nunique(),
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from whaleid.gallery.folder import Gallery

    g = Gallery.load(args.gallery)
    m = g.manifest
    present = g.individuals["individual_id"].isin(g.photos["individual_id"]).to_numpy()
    added = int((~g.individuals["trained"].astype(bool).to_numpy() & present).sum())
    emptied = int((~present).sum())
    removed = f", {emptied} listed with every photo removed (never predicted)" if emptied else ""
    print(
        f"{args.gallery}: {len(g.photos)} photos of {g.photos['individual_id'].nunique()} individuals "
        f"({added} added after training{removed}); models {', '.join(x['path'] for x in m['models'])}; "
        f"{m['img_size']} px, knn.index {m['knn']['index']}, blend.knn_weight {m['blend']['knn_weight']}, "
        f"local.method {m['local']['method']}, rule threshold {m['rule']['threshold']}"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from whaleid.model.export import export_model

    out = args.out or str(Path(args.model).with_suffix(".onnx" if args.format == "onnx" else ".ts"))
    export_model(args.model, out, args.format, args.flip_tta)
    return 0


def _gallery_arguments(gal: argparse.ArgumentParser) -> None:
    actions = gal.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    for name, action in GALLERY_ACTIONS.items():
        p = actions.add_parser(name, help=action.help, description=action.help)
        action.arguments(p)
        p.add_argument("--gallery", default=str(GALLERY_DIR), help="gallery folder (default: gallery/)")
        if name != "info":
            p.add_argument(
                "--out",
                help="write the changed gallery here (a new path or a gallery folder) instead of replacing --gallery",
            )


def _gallery(args: argparse.Namespace) -> int:
    return GALLERY_ACTIONS[args.gallery_command].run(args)


GALLERY_ACTIONS = {
    "add": Command("add photos of one individual (--id) or of many (--csv)", _add_arguments, _add),
    "remove": Command("remove photos (--image) or every photo of individuals (--id)", _remove_arguments, _remove),
    "info": Command("what the gallery holds and was built with", lambda p: None, _info),
}

COMMANDS = {
    "identify": Command(
        "the known individuals most like each photo, by the gallery's rule", _identify_arguments, _identify
    ),
    "export": Command("write a model's embedding network as ONNX or TorchScript", _export_arguments, _export),
    "gallery": Command("grow or trim a gallery without retraining: add, remove, info", _gallery_arguments, _gallery),
}
