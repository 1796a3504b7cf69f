"""Convert a photo-ID set stored as one folder per individual into the Kaggle layout whaleid reads, with an
answer key, for development on real photos (nothing here is committed: point it outside the repository).

    python -m bench.folders_to_kaggle SRC DST --species lion [--new-share 0.2] [--test-share 0.2] [--seed 0]

SRC holds ``<individual>/<photo>`` (or ``<any split>/<individual>/<photo>``; splits are merged). DST gets
``train.csv``, ``train_images/``, ``test_images/``, ``sample_submission.csv`` and ``solution.csv``. Whole
individuals are kept out of train until about ``new_share`` of the test photos show them (new individuals);
of every other individual with 2+ photos, about ``test_share`` of its photos (at least one) go to test. Photos
are renamed to a hash of their source path (names stay unique, no spaces); ids are folder names, lower case,
spaces and dashes as underscores. Deterministic in ``seed``.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def collect(src: Path) -> pd.DataFrame:
    """One row per photo: path, individual_id (its folder's name, normalised)."""
    rows = []
    for path in sorted(src.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            ident = re.sub(r"[\s\-]+", "_", path.parent.name.strip().lower())
            rows.append({"path": path, "individual_id": ident})
    if not rows:
        raise SystemExit(f"{src}: no photos found in <individual>/<photo> folders")
    return pd.DataFrame(rows)


def split(photos: pd.DataFrame, new_share: float, test_share: float, seed: int) -> pd.DataFrame:
    """Add a ``test`` column: True for the photos that go to test."""
    rng = np.random.default_rng(seed)
    ids = sorted(photos["individual_id"].unique())
    order = [ids[i] for i in rng.permutation(len(ids))]
    counts = photos["individual_id"].value_counts()
    known_test = sum(max(1, int(round(test_share * c))) for c in counts[counts >= 2])
    target_new = new_share / (1 - new_share) * known_test
    new_ids: set[str] = set()
    for ident in order:
        if sum(counts[i] for i in new_ids) >= target_new:
            break
        new_ids.add(ident)
    test = photos["individual_id"].isin(new_ids).to_numpy().copy()
    for _, rows in photos[~photos["individual_id"].isin(new_ids)].groupby("individual_id"):
        if len(rows) >= 2:
            take = max(1, int(round(test_share * len(rows))))
            test[rng.choice(rows.index.to_numpy(), size=take, replace=False)] = True
    return photos.assign(test=test, new=photos["individual_id"].isin(new_ids))


def write(photos: pd.DataFrame, dst: Path, species: str, src: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    for sub in ("train_images", "test_images"):
        (dst / sub).mkdir(parents=True)
    names = []
    for path, test in zip(photos["path"], photos["test"], strict=True):
        name = hashlib.sha1(str(path.relative_to(src)).encode()).hexdigest()[:14] + path.suffix.lower()
        shutil.copyfile(path, dst / ("test_images" if test else "train_images") / name)
        names.append(name)
    photos = photos.assign(image=names, species=species)
    train, test = photos[~photos["test"]], photos[photos["test"]].sort_values("image")
    train[["image", "species", "individual_id"]].to_csv(dst / "train.csv", index=False)
    pd.DataFrame({"image": test["image"], "predictions": "new_individual"}).to_csv(
        dst / "sample_submission.csv", index=False
    )
    truth = np.where(test["new"], "new_individual", test["individual_id"])
    pd.DataFrame({"image": test["image"], "individual_id": truth}).to_csv(dst / "solution.csv", index=False)
    print(
        f"{dst}: {len(train)} train photos of {train['individual_id'].nunique()} individuals "
        f"({(train['individual_id'].value_counts() == 1).mean():.0%} seen once), {len(test)} test photos, "
        f"{test['new'].mean():.1%} of them new individuals"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--species", default="animal")
    parser.add_argument("--new-share", type=float, default=0.2)
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    photos = split(collect(args.src), args.new_share, args.test_share, args.seed)
    write(photos, args.dst, args.species, args.src)


if __name__ == "__main__":
    main()
