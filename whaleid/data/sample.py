"""Generated photo-ID dataset in the exact Happywhale (Kaggle) layout: the embedded default, so a fresh clone runs
end to end with no download.

Each photo shows the dorsal fin and back of one animal above the sea (what is drawn: :mod:`whaleid.data.scene`).
The default params draw hard photos (a small fin anywhere in a cluttered frame); ``subject_min 0.55, subject_max
0.85, off_centre 0, clutter 0, occlusion 0, mark_contrast_min 1`` draws the old easy ones, byte for byte.

Image counts per individual follow a Zipf law (``tail_exponent`` 2 gives ~61% seen once, as the real data's 59%),
and ``new_share`` of the test images show individuals that are absent from train.

Output (``write_dataset``)::

    train.csv              image,species,individual_id
    train_images/*.jpg     <14 hex>.jpg
    test_images/*.jpg
    sample_submission.csv  image,predictions  (one constant line for every test image, as Kaggle ships it)
    solution.csv           image,individual_id  (new_individual for unseen animals; the answer key)
    boxes.csv              image,x1,y1,x2,y2  (the fin's true bounding box of every train photo; of the test photos
                           too with ``test_boxes``)
    solution_boxes.csv     the test photos' true boxes otherwise (an answer key that scores the box detector)

Everything is a pure function of the config: same params give byte-identical files, whatever ``n_jobs``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from whaleid.config import SampleConfig
from whaleid.core.atomic import atomic_dir
from whaleid.core.parallel import map_chunks
from whaleid.core.runtime import Runtime
from whaleid.data.individuals import Individual, make_individual, species_table
from whaleid.data.layout import NEW_INDIVIDUAL, SOLUTION_BOXES
from whaleid.data.scene import Scene, render_photo

log = logging.getLogger(__name__)


_CHUNK = 64  # images rendered per parallel task


def _hex(rng: np.random.Generator, n_bytes: int) -> str:
    return rng.bytes(n_bytes).hex()


def _unique_hex(rng: np.random.Generator, n_bytes: int, count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        value = _hex(rng, n_bytes)
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out


def _render_chunk(jobs: list[tuple[str, Individual, int]], out_dir: str, cfg: SampleConfig) -> list[tuple[int, ...]]:
    """Render and save a chunk of (relative path, individual, photo seed); return each fin box."""
    cv2.setNumThreads(1)
    boxes = []
    for rel, ind, photo_seed in jobs:
        rng = np.random.default_rng([cfg.seed, 7, photo_seed])
        extra = np.random.default_rng([cfg.seed, 8, photo_seed])
        img, box = render_photo(ind, cfg.img_size, rng, mirror_prob=cfg.mirror_prob, scene=Scene.of(cfg), extra=extra)
        quality = int(rng.integers(cfg.jpeg_quality_min, cfg.jpeg_quality_max + 1))
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - cv2 failure
            raise RuntimeError(f"JPEG encoding failed for {rel}")
        Path(out_dir, rel).write_bytes(buf.tobytes())
        boxes.append(box)
    return boxes


def zipf_counts(rng: np.random.Generator, total: int, exponent: float, cap: int, floor: int = 1) -> list[int]:
    """Images per individual, Zipf-distributed, at least ``floor`` and at most ``cap``, summing exactly to ``total``
    (a remainder smaller than ``floor`` joins the last individual)."""
    counts: list[int] = []
    remaining = total
    while remaining > 0:
        if counts and remaining < floor:
            counts[-1] += remaining
            break
        c = int(min(max(rng.zipf(exponent), floor), cap, remaining))
        counts.append(c)
        remaining -= c
    return counts


@dataclass(frozen=True)
class SamplePlan:
    """Who appears in which photo; rendering is separate so that planning stays cheap and testable."""

    individuals: list[Individual]
    species_names: list[str]
    train: pd.DataFrame  # image, species, individual_id, _ind, _seed
    test: pd.DataFrame  # image, individual_id (truth, before new_individual mapping), species, _ind, _seed, _new


def plan_dataset(cfg: SampleConfig) -> SamplePlan:
    """Decide individuals, image counts and names (deterministic in ``cfg``)."""
    rng = np.random.default_rng([cfg.seed, 0])
    table = species_table(cfg.n_species, cfg.seed)
    weights = np.array([float(s["weight"]) for s in table])
    weights /= weights.sum()
    taken_ids: set[str] = set()
    taken_images: set[str] = set()

    def new_individuals(counts: list[int]) -> list[Individual]:
        ids = _unique_hex(rng, 6, len(counts), taken_ids)
        species = rng.choice(cfg.n_species, size=len(counts), p=weights)
        return [
            make_individual(i, int(s), table[int(s)], np.random.default_rng([cfg.seed, 2, len(taken_ids), k]))
            for k, (i, s) in enumerate(zip(ids, species, strict=True))
        ]

    train_counts = zipf_counts(rng, cfg.n_train, cfg.tail_exponent, cfg.max_images_per_id, cfg.min_images_per_id)
    known = new_individuals(train_counts)
    n_new_images = int(round(cfg.n_test * cfg.new_share))
    n_known_images = cfg.n_test - n_new_images
    new_counts = (
        zipf_counts(rng, n_new_images, cfg.tail_exponent, cfg.max_images_per_id, cfg.min_images_per_id)
        if n_new_images
        else []
    )
    unseen = new_individuals(new_counts)
    # Known test photos follow the train population (an animal photographed often in train is met often again).
    p_known = np.asarray(train_counts, dtype=np.float64)
    test_known = rng.choice(len(known), size=n_known_images, p=p_known / p_known.sum())

    rows_train = [(k, c) for k, c in enumerate(train_counts) for _ in range(c)]
    rows_test = [(int(k), False) for k in test_known] + [
        (len(known) + k, True) for k, c in enumerate(new_counts) for _ in range(c)
    ]
    individuals = known + unseen
    train_names = _unique_hex(rng, 7, len(rows_train), taken_images)
    test_names = _unique_hex(rng, 7, len(rows_test), taken_images)
    names = [s["name"] for s in table]
    train = pd.DataFrame(
        {
            "image": [f"{n}.jpg" for n in train_names],
            "species": [names[individuals[k].species] for k, _ in rows_train],
            "individual_id": [individuals[k].individual_id for k, _ in rows_train],
            "_ind": [k for k, _ in rows_train],
        }
    )
    test = pd.DataFrame(
        {
            "image": [f"{n}.jpg" for n in test_names],
            "species": [names[individuals[k].species] for k, _ in rows_test],
            "individual_id": [individuals[k].individual_id for k, _ in rows_test],
            "_ind": [k for k, _ in rows_test],
            "_new": [new for _, new in rows_test],
        }
    )
    # Shuffle so that files are not grouped by individual, then give every photo its own seed.
    train = train.iloc[rng.permutation(len(train))].reset_index(drop=True)
    test = test.iloc[rng.permutation(len(test))].reset_index(drop=True)
    train["_seed"] = np.arange(len(train))
    test["_seed"] = np.arange(len(test)) + len(train)
    return SamplePlan(individuals, names, train, test)


def write_dataset(cfg: SampleConfig, out_dir: str | Path, run: Runtime = Runtime()) -> SamplePlan:
    """Plan and render the dataset into ``out_dir`` (replaced atomically as a whole)."""
    plan = plan_dataset(cfg)
    jobs = []
    for folder, frame in (("train_images", plan.train), ("test_images", plan.test)):
        for image, ind, seed in zip(frame["image"], frame["_ind"], frame["_seed"], strict=True):
            jobs.append((f"{folder}/{image}", plan.individuals[int(ind)], int(seed)))
    log.info(
        "Generating %d train + %d test images (%d individuals, %d species) at %d px",
        len(plan.train),
        len(plan.test),
        len(plan.individuals),
        cfg.n_species,
        cfg.img_size,
    )
    with atomic_dir(out_dir) as tmp:
        (tmp / "train_images").mkdir()
        (tmp / "test_images").mkdir()
        boxes: list[tuple[int, ...]] = map_chunks(
            _render_chunk,
            jobs,
            str(tmp),
            cfg,
            chunk_size=_CHUNK,
            n_jobs=run.n_jobs,
            desc="sample",
            progress=run.progress,
        )

        train = plan.train[["image", "species", "individual_id"]]
        train.to_csv(tmp / "train.csv", index=False, lineterminator="\n")
        test_sorted = plan.test.sort_values("image").reset_index(drop=True)
        solution = pd.DataFrame(
            {
                "image": test_sorted["image"],
                "individual_id": np.where(test_sorted["_new"], NEW_INDIVIDUAL, test_sorted["individual_id"]),
            }
        )
        solution.to_csv(tmp / "solution.csv", index=False, lineterminator="\n")
        top = train["individual_id"].value_counts().index[:4].tolist()
        constant = " ".join([NEW_INDIVIDUAL, *top])
        pd.DataFrame({"image": test_sorted["image"], "predictions": constant}).to_csv(
            tmp / "sample_submission.csv", index=False, lineterminator="\n"
        )
        all_images = list(plan.train["image"]) + list(plan.test["image"])
        box_frame = pd.DataFrame(boxes, columns=["x1", "y1", "x2", "y2"])
        box_frame.insert(0, "image", all_images)
        if cfg.test_boxes:
            box_frame.to_csv(tmp / "boxes.csv", index=False, lineterminator="\n")
        else:  # as with real data: boxes drawn for train; the test photos' boxes only score a detector
            box_frame.iloc[: len(plan.train)].to_csv(tmp / "boxes.csv", index=False, lineterminator="\n")
            test_boxes = box_frame.iloc[len(plan.train) :].sort_values("image")
            test_boxes.to_csv(tmp / SOLUTION_BOXES, index=False, lineterminator="\n")
    return plan
