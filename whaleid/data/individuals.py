"""Who is in the generated dataset (:mod:`whaleid.data.sample`): species and the individuals of each, as the photos
of :mod:`whaleid.data.scene` draw them. A species fixes the fin's silhouette, skin tone and marking colour; an
individual adds notches cut into the trailing edge, pigment spots and scars at fixed places on the fin, and a small
jitter of shape and tone: the only cues that tell two animals of a species apart."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
