"""Generated photo-ID dataset in the exact Happywhale (Kaggle) layout.

Each photo shows the dorsal fin and back of one animal above the sea. What is drawn:

* species: fin silhouette (height, sweep, leading-edge bulge, trailing-edge hollow), skin tone, marking colour;
* individual: notches cut into the fin's trailing edge, pigment spots and scars at fixed places on the fin,
  plus a small jitter of shape and tone -- the only cues that tell two animals of a species apart;
* photo: mirrored side, pose (rotation, scale, position, partial crop), water line, background (sea, sky,
  waves), lighting (gain, gamma, colour cast, gradient), blur, sensor noise and JPEG quality;
* scene (:class:`Scene`, what makes real photos hard): the fin small and anywhere in the frame, clutter (rocks,
  boats, birds, foam, debris and the distant fins of other animals), splash or debris in front of the fin, and
  markings that are faint in some photos. The default params draw such photos; ``subject_min 0.55, subject_max
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
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from whaleid.config import SampleConfig
from whaleid.core.atomic import atomic_dir
from whaleid.core.parallel import map_chunks
from whaleid.data.layout import NEW_INDIVIDUAL, SOLUTION_BOXES

log = logging.getLogger(__name__)


# The competition's 26 species (typos fixed), most frequent first.
SPECIES_NAMES = (
    "bottlenose_dolphin",
    "beluga",
    "humpback_whale",
    "blue_whale",
    "false_killer_whale",
    "dusky_dolphin",
    "spinner_dolphin",
    "melon_headed_whale",
    "minke_whale",
    "killer_whale",
    "fin_whale",
    "gray_whale",
    "bryde_whale",
    "southern_right_whale",
    "spotted_dolphin",
    "sei_whale",
    "short_finned_pilot_whale",
    "common_dolphin",
    "cuviers_beaked_whale",
    "pilot_whale",
    "long_finned_pilot_whale",
    "white_sided_dolphin",
    "brydes_whale",
    "pantropic_spotted_dolphin",
    "globis",
    "frasiers_dolphin",
)

_EDGE_POINTS = 48  # polygon resolution of each fin edge
_CHUNK = 64  # images rendered per parallel task


@dataclass(frozen=True)
class Individual:
    """The fixed appearance of one animal (all lengths relative to the fin's base width)."""

    individual_id: str
    species: int
    height: float
    sweep: float
    bulge: float
    hollow: float
    tone: tuple[float, float, float]
    mark_tone: tuple[float, float, float]
    notches: tuple[tuple[float, float, float], ...]  # (position along trailing edge, depth, half-width)
    spots: tuple[tuple[float, float, float, float], ...]  # (u, v, radius, tone factor)
    scars: tuple[tuple[float, float, float, float], ...]  # (u, v, angle, length)


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


def species_table(n_species: int, seed: int) -> list[dict[str, object]]:
    """Species prototypes: silhouette, skin and marking tones, and a frequency weight."""
    rng = np.random.default_rng([seed, 1])
    table = []
    for i in range(n_species):
        grey = rng.uniform(45, 150)
        tint = rng.uniform(-18, 18, size=3)
        tone = np.clip(grey + tint, 20, 220)
        light = rng.random() < 0.5
        mark = np.clip(tone + (rng.uniform(60, 100) if light else -rng.uniform(35, 60)), 5, 250)
        table.append(
            {
                "name": SPECIES_NAMES[i],
                "height": rng.uniform(0.55, 1.15),
                "sweep": rng.uniform(0.25, 0.95),
                "bulge": rng.uniform(0.0, 0.25),
                "hollow": rng.uniform(0.0, 0.3),
                "tone": tuple(float(x) for x in tone),
                "mark_tone": tuple(float(x) for x in mark),
                "weight": 1.0 / (i + 1) ** 0.7,
            }
        )
    return table


def make_individual(individual_id: str, species: int, proto: dict[str, object], rng: np.random.Generator) -> Individual:
    """Draw the markings of one animal of species ``proto``."""
    n_notch = int(rng.integers(1, 5))
    notches = tuple(
        (float(rng.uniform(0.12, 0.9)), float(rng.uniform(0.06, 0.16)), float(rng.uniform(0.03, 0.07)))
        for _ in range(n_notch)
    )
    spots = []
    for _ in range(int(rng.integers(3, 7))):
        v = rng.uniform(0.05, 0.6)
        spots.append(
            (float(rng.uniform(0.15, 0.85)), float(v), float(rng.uniform(0.08, 0.17)), float(rng.uniform(0.75, 1.15)))
        )
    scars = tuple(
        (
            float(rng.uniform(0.2, 0.8)),
            float(rng.uniform(0.05, 0.5)),
            float(rng.uniform(0, math.pi)),
            float(rng.uniform(0.15, 0.4)),
        )
        for _ in range(int(rng.integers(0, 3)))
    )
    tone = np.asarray(proto["tone"]) * rng.uniform(0.92, 1.08)
    # Markings take an individual shade of the species' marking colour (real pigment and scar tones vary).
    mark = np.clip(np.asarray(proto["mark_tone"]) * rng.uniform(0.6, 1.4, size=3), 5, 250)
    return Individual(
        individual_id=individual_id,
        species=species,
        height=float(proto["height"]) * rng.uniform(0.9, 1.1),
        sweep=float(proto["sweep"]) + rng.uniform(-0.08, 0.08),
        bulge=float(proto["bulge"]),
        hollow=float(proto["hollow"]),
        tone=tuple(float(x) for x in tone),
        mark_tone=tuple(float(x) for x in mark),
        notches=notches,
        spots=tuple(spots),
        scars=scars,
    )


def fin_outline(ind: Individual) -> np.ndarray:
    """Closed fin polygon in fin coordinates: base from (0, 0) to (1, 0), tip at (sweep, height), v up."""
    t = np.linspace(0.0, 1.0, _EDGE_POINTS)
    tip = np.array([ind.sweep + 0.25, ind.height])
    # Leading edge: base-left to tip, bulging outwards.
    lead = np.outer(1 - t, [0.0, 0.0]) + np.outer(t, tip)
    lead[:, 0] -= ind.bulge * np.sin(np.pi * t) * 0.6
    lead[:, 1] += ind.bulge * np.sin(np.pi * t) * 0.3
    # Trailing edge: tip to base-right, hollowed inwards, with the individual's notches cut in.
    trail = np.outer(1 - t, tip) + np.outer(t, [1.0, 0.0])
    direction = np.array([1.0, 0.0]) - tip
    normal = np.array([-direction[1], direction[0]]) / np.linalg.norm(direction)  # points into the fin
    if normal[0] > 0:
        normal = -normal
    depth = ind.hollow * np.sin(np.pi * t) * 0.5
    for pos, notch_depth, half_width in ind.notches:
        depth = depth + notch_depth * np.clip(1.0 - np.abs(t - pos) / half_width, 0.0, None)
    trail = trail + np.outer(depth, normal)  # cut towards the fin interior
    return np.concatenate([lead, trail[1:]], axis=0)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    sea = rng.uniform([15, 45, 60], [70, 125, 145])  # RGB, blue-green
    sky = rng.uniform([120, 140, 160], [220, 230, 250])
    horizon = rng.uniform(-0.2, 0.45) * size
    y = np.arange(size, dtype=np.float32)[:, None, None]
    depth = np.clip((y - horizon) / size, 0, 1)
    img = sea[None, None, :] * (1.0 - 0.5 * depth) + np.zeros((1, size, 1))
    img = np.where(y < horizon, sky[None, None, :] + np.zeros((1, size, 1)), img)
    cells = int(rng.integers(4, 12))
    waves = cv2.resize(
        rng.normal(0, 1, (cells, cells * 2)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    img = img + waves[:, :, None] * rng.uniform(4, 18) * (y >= horizon)
    return img.astype(np.float32)


@dataclass(frozen=True)
class Scene:
    """How hard a photo is beyond the animal itself (``sample.*``; the defaults draw the old, easy photos)."""

    subject_min: float = 0.55  # fin base width, share of the photo width
    subject_max: float = 0.85
    off_centre: float = 0.0  # 0: fin near the centre | 1: anywhere, partly cut off at the edges now and then
    clutter: int = 0  # at most this many distractors: rocks, boats, birds, foam, distant fins of other animals
    occlusion: float = 0.0  # chance that splash or debris in front hides part of the fin
    mark_contrast_min: float = 1.0  # markings blend in at a per-photo contrast between this and 1 (faint, worn)

    @classmethod
    def of(cls, cfg: SampleConfig) -> Scene:
        return cls(cfg.subject_min, cfg.subject_max, cfg.off_centre, cfg.clutter, cfg.occlusion, cfg.mark_contrast_min)


def _blob(rng: np.random.Generator, centre: np.ndarray, radius: float, points: int = 9) -> np.ndarray:
    """An irregular closed polygon around ``centre`` (rocks, debris, foam)."""
    theta = np.sort(rng.uniform(0, 2 * math.pi, points))
    r = radius * rng.uniform(0.6, 1.0, points)
    return centre + np.stack([np.cos(theta) * r, np.sin(theta) * r * rng.uniform(0.4, 0.8)], axis=1)


def _fill(img: np.ndarray, pts: np.ndarray, colour: np.ndarray, alpha: float = 1.0) -> None:
    """Paint polygon ``pts`` (pixels, float) onto ``img`` (float RGB) with anti-aliased edges."""
    mask = np.zeros(img.shape[:2], np.float32)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    mask = mask[:, :, None] * alpha
    img *= 1 - mask
    img += mask * colour[None, None, :]


def _clutter(img: np.ndarray, rng: np.random.Generator, scene: Scene, base_width: float, horizon: float) -> None:
    """Distractors behind the animal: rocks and boats on the horizon, birds in the sky, floating debris and foam,
    and the small distant fins of other animals -- dark shapes of the animal's own tones that a detector must tell
    from the subject by size and context."""
    size = img.shape[0]
    for _ in range(int(rng.integers(0, scene.clutter + 1))):
        kind = rng.choice(["rock", "boat", "bird", "debris", "foam", "fin"], p=[0.2, 0.1, 0.15, 0.2, 0.2, 0.15])
        x = rng.uniform(0, size)
        grey = rng.uniform(25, 140)
        dark = np.clip(grey + rng.uniform(-15, 15, 3), 0, 255)
        if kind == "rock":
            r = rng.uniform(0.05, 0.2) * size
            _fill(img, _blob(rng, np.array([x, horizon + r * 0.3]), r), dark)
        elif kind == "boat":
            w, h = rng.uniform(0.1, 0.3) * size, rng.uniform(0.02, 0.06) * size
            y = horizon + rng.uniform(0, 0.1) * size
            hull = np.array([[x - w / 2, y - h], [x + w / 2, y - h], [x + w * 0.4, y], [x - w * 0.4, y]])
            _fill(img, hull, np.clip(rng.uniform(80, 255, 3), 0, 255))
            mast = np.array([[x, y - h], [x + w * 0.3, y - h], [x, y - h - w * 0.6]])
            _fill(img, mast, np.full(3, rng.uniform(200, 250)))
        elif kind == "bird":
            y, s = rng.uniform(0, max(horizon, 0.2 * size)), rng.uniform(0.015, 0.04) * size
            wing = np.array([[x - 2 * s, y - s], [x, y], [x + 2 * s, y - s], [x, y + 0.4 * s]])
            _fill(img, wing, dark * 0.5)
        elif kind == "debris":
            y = rng.uniform(max(horizon, 0), size)
            _fill(img, _blob(rng, np.array([x, y]), rng.uniform(0.02, 0.08) * size), dark, rng.uniform(0.6, 1.0))
        elif kind == "foam":
            y = rng.uniform(max(horizon, 0), size)
            r = rng.uniform(0.03, 0.12) * size
            _fill(img, _blob(rng, np.array([x, y]), r, 12), np.full(3, rng.uniform(190, 250)), rng.uniform(0.4, 0.9))
        else:  # another animal far off: a small plain fin on the water
            w = base_width * rng.uniform(0.2, 0.45)
            y = max(horizon, 0) + rng.uniform(0.02, 0.3) * size
            tip = np.array([x + w * rng.uniform(0.1, 0.6), y - w * rng.uniform(0.5, 1.1)])
            _fill(img, np.array([[x - w / 2, y], tip, [x + w / 2, y]]), dark)


def _occlude(img: np.ndarray, rng: np.random.Generator, fin_px: np.ndarray, base_width: float) -> None:
    """Splash or floating debris in front of the fin, over a random point of it."""
    centre = fin_px[int(rng.integers(len(fin_px)))] * 0.5 + fin_px.mean(axis=0) * 0.5
    r = rng.uniform(0.15, 0.35) * base_width
    colour = np.full(3, rng.uniform(200, 250)) if rng.random() < 0.6 else rng.uniform(20, 90, 3)
    _fill(img, _blob(rng, centre, r, 12), colour, rng.uniform(0.7, 1.0))


def render_photo(
    ind: Individual,
    size: int,
    rng: np.random.Generator,
    mirror_prob: float,
    scene: Scene = Scene(),
    extra: np.random.Generator | None = None,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Render one photo of ``ind`` (RGB uint8, ``size`` x ``size``) and the fin's bounding box.

    ``scene`` adds what makes real photos hard; its draws come from ``extra`` (its own stream), so that the default
    scene draws exactly the photos it always did."""
    extra = extra if extra is not None else np.random.default_rng(0)
    img = _background(rng, size)
    poly = fin_outline(ind)
    mirror = rng.random() < mirror_prob
    base_width = rng.uniform(scene.subject_min, scene.subject_max) * size
    angle = math.radians(rng.uniform(-12, 12))
    spread_x, low_y = 0.2 + 0.25 * scene.off_centre, 0.55 - 0.2 * scene.off_centre
    centre = np.array([rng.uniform(0.5 - spread_x, 0.5 + spread_x) * size, rng.uniform(low_y, 0.85) * size])
    if scene.clutter:
        _clutter(img, extra, scene, base_width, horizon=centre[1] - extra.uniform(0.1, 0.4) * size)

    def to_image(points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
        if mirror:
            p[:, 0] = 1.0 - p[:, 0]
        p = (p - [0.5, 0.0]) * [base_width, -base_width]
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        return p @ rot.T + centre

    shift = 4  # fixed-point bits for sub-pixel polygon drawing
    scale = float(1 << shift)

    def draw_poly(target: np.ndarray, pts: np.ndarray, colour: object) -> None:
        cv2.fillPoly(target, [np.round(pts * scale).astype(np.int32)], colour, lineType=cv2.LINE_AA, shift=shift)

    # The animal's back: a wide ellipse under the fin base.
    tone = np.asarray(ind.tone) * rng.uniform(0.95, 1.05)
    back = np.array([[u, -0.18 * math.sin(math.pi * (u + 0.6) / 2.2) + 0.02] for u in np.linspace(-0.6, 1.6, 40)])
    back = np.concatenate([back, [[1.6, -2.0], [-0.6, -2.0]]])
    body = np.zeros((size, size), np.float32)
    draw_poly(body, to_image(back), 1.0)
    draw_poly(body, to_image(poly), 1.0)

    fin_mask = np.zeros((size, size), np.float32)
    draw_poly(fin_mask, to_image(poly), 1.0)
    marks = np.zeros((size, size), np.float32)
    mark_tone = np.zeros((size, size), np.float32)
    for u, v, radius, factor in ind.spots:
        centre_px = to_image([[u, v]])[0]
        r = radius * base_width
        axes = (int(round(r * 16)), int(round(r * 0.75 * 16)))
        centre_fixed = (int(round(centre_px[0] * 16)), int(round(centre_px[1] * 16)))
        for target, value in ((marks, 1.0), (mark_tone, factor)):
            cv2.ellipse(target, centre_fixed, axes, math.degrees(-angle), 0, 360, value, -1, cv2.LINE_AA, 4)
    for u, v, theta, length in ind.scars:
        a = to_image([[u, v]])[0]
        b = to_image([[u + length * math.cos(theta), v + length * math.sin(theta)]])[0]
        thickness = max(1, int(round(0.04 * base_width)))
        p1, p2 = (tuple(int(round(x * 16)) for x in point) for point in (a, b))
        for target, value in ((marks, 1.0), (mark_tone, 1.2)):
            cv2.line(target, p1, p2, value, thickness, cv2.LINE_AA, 4)
    marks = np.clip(marks, 0, 1) * fin_mask
    if scene.mark_contrast_min < 1.0:
        marks = marks * extra.uniform(scene.mark_contrast_min, 1.0)
    mark_colour = np.asarray(ind.mark_tone)[None, None, :] * np.clip(mark_tone, 0.5, 1.3)[:, :, None]

    # Light falls off towards the base of the fin.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    shade = 1.0 + 0.15 * ((centre[1] - yy) / size)
    skin = tone[None, None, :] * shade[:, :, None]
    skin = skin * (1 - marks[:, :, None]) + mark_colour * marks[:, :, None]
    img = img * (1 - body[:, :, None]) + skin * body[:, :, None]

    def water_over(image: np.ndarray, level: float, draw: np.random.Generator) -> np.ndarray:
        wave = level + np.sin(xx[0] / size * draw.uniform(4, 12) + draw.uniform(0, 6)) * draw.uniform(0.5, 2.0)
        water = cv2.GaussianBlur((yy > wave[None, :]).astype(np.float32), (3, 3), 0.7)
        return image * (1 - water[:, :, None]) + _background(draw, size) * water[:, :, None]

    # Water line hides the lowest part of the fin now and then.
    if rng.random() < 0.5:
        img = water_over(img, centre[1] - rng.uniform(0.0, 0.15) * base_width * ind.height, rng)
    elif scene.off_centre:  # a fin high in the frame: the back sinks into the water not far below it
        img = water_over(img, centre[1] + extra.uniform(0.05, 0.25) * base_width, extra)
    if scene.occlusion and extra.random() < scene.occlusion:
        img = np.ascontiguousarray(img, dtype=np.float32)
        _occlude(img, extra, to_image(poly), base_width)

    # Lighting: gain, gamma, colour cast and a linear gradient.
    gain = rng.uniform(0.7, 1.3)
    cast = rng.uniform(0.92, 1.08, size=3)
    gx, gy = rng.uniform(-0.25, 0.25, size=2)
    gradient = 1.0 + gx * (xx / size - 0.5) + gy * (yy / size - 0.5)
    img = img * gain * cast[None, None, :] * gradient[:, :, None]
    img = 255.0 * np.power(np.clip(img / 255.0, 0, 1), rng.uniform(0.75, 1.3))

    if rng.random() < 0.5:
        sigma = rng.uniform(0.3, 1.2) * size / 64
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0, rng.uniform(0, 7), img.shape)

    fin_px = to_image(poly)
    x1, y1 = np.clip(np.floor(fin_px.min(axis=0)), 0, size - 1).astype(int)
    x2, y2 = np.clip(np.ceil(fin_px.max(axis=0)), 0, size - 1).astype(int)
    return np.clip(img, 0, 255).round().astype(np.uint8), (int(x1), int(y1), int(x2), int(y2))


def _render_chunk(jobs: list[tuple[str, Individual, int]], out_dir: str, cfg: SampleConfig) -> list[tuple[int, ...]]:
    """Render and save a chunk of (relative path, individual, photo seed); return each fin box."""
    cv2.setNumThreads(1)
    boxes = []
    for rel, ind, photo_seed in jobs:
        rng = np.random.default_rng([cfg.seed, 7, photo_seed])
        extra = np.random.default_rng([cfg.seed, 8, photo_seed])
        img, box = render_photo(ind, cfg.img_size, rng, cfg.mirror_prob, Scene.of(cfg), extra)
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


def write_dataset(cfg: SampleConfig, out_dir: str | Path, n_jobs: int = -1, progress: bool = True) -> SamplePlan:
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
            _render_chunk, jobs, str(tmp), cfg, chunk_size=_CHUNK, n_jobs=n_jobs, desc="sample", progress=progress
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
