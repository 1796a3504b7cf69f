"""How a generated photo is drawn (the generated default dataset, :mod:`whaleid.data.sample`): one individual's fin
(:mod:`whaleid.data.individuals`) in its scene.

* photo (:func:`render_photo`): mirrored side, pose (rotation, scale, position, partial crop), water line,
  background (sea, sky, waves), lighting (gain, gamma, colour cast, gradient), blur, sensor noise;
* scene (:class:`Scene`, what makes real photos hard): the fin small and anywhere in the frame, clutter (rocks,
  boats, birds, foam, debris and the distant fins of other animals), splash or debris in front of the fin, and
  markings that are faint in some photos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from whaleid.config import SampleConfig
from whaleid.data.individuals import Individual

_EDGE_POINTS = 48  # polygon resolution of each fin edge


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
    *,
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
