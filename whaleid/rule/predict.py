"""The prediction rule, in one place: from nearest neighbours to five predictions with new_individual.

* scoring (``threshold.scoring``): ``max`` ranks individuals by their best similarity, ``vote`` by a weighted vote
  over the top-k (:func:`candidates`);
* fitting (:func:`fit_rule`, on validation queries of one or several fold models, out of fold): ``sweep`` takes the
  grid threshold with the best ``cv.new_ratio``-weighted MAP@5, ``share`` puts new_individual first for
  ``new_ratio`` of the queries; optional per-species thresholds (species of the top candidate);
* the fitted :class:`Rule` is saved as JSON and applied as saved (:func:`apply_rule`).

Rule (the reference notebook's intent, without its bugs): neighbours are taken in *descending* similarity; each
individual keeps its best similarity (first occurrence); the first five distinct individuals are the candidates.
``new_individual`` is inserted before the first candidate whose similarity is below the threshold. Rows with fewer
than five candidates are filled with the most frequent training individuals not already present, so the five
predictions are always distinct.

Labels are integers here: class numbers ``>= 0``, :data:`NEW` (-1) for new_individual. With ``p`` = number of
candidates at or above the threshold, the prediction is ``cand[:p] + [NEW] + cand[p:4]``; the sweep scores every
threshold at once from ``p`` without building a single list.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from whaleid.config import ThresholdConfig
from whaleid.core.errors import ConfigError, DataError
from whaleid.retrieval.neighbours import Neighbours
from whaleid.rule.candidates import N_PRED, NEW, candidates

log = logging.getLogger(__name__)


NO_NEW_WARNING = (
    "validation has no new individuals (every validation individual is also in training), so the threshold sweep "
    "cannot learn when to predict new_individual; falling back to threshold.method share: new_individual first for "
    "cv.new_ratio = {ratio:.0%} of the test images. Raise cv.min_new_share (the split then holds whole individuals "
    "out of training) to calibrate the threshold, or set threshold.method: share to choose this rule yourself."
)


def new_positions(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(Q, T): where new_individual goes, = number of candidates scoring at or above each threshold.

    ``thresholds`` is (T,) shared by every query, or (Q, 1) with one threshold per query."""
    thr = np.asarray(thresholds, dtype=np.float32)
    thr = thr[:, None, :] if thr.ndim == 2 else thr[None, None, :]
    return (scores[:, :, None] >= thr).sum(axis=1)


def share_threshold(scores: np.ndarray, share: float) -> float:
    """The threshold that puts new_individual first for ``share`` of the queries: the ``share`` quantile of the
    top candidates' scores (rounded to 6 decimals)."""
    top = np.asarray(scores, dtype=np.float64)[:, 0]
    top = top[np.isfinite(top)]
    if len(top) == 0 or share <= 0:
        return 0.0 if len(top) == 0 else round(float(top.min()) - 1e-6, 6)
    return round(float(np.quantile(top, share)), 6)


def species_thresholds(
    labels: np.ndarray,
    scores: np.ndarray,
    truth: np.ndarray,
    *,
    query_species: np.ndarray,
    thresholds: Sequence[float],
    new_ratio: float,
    min_queries: int,
) -> dict[int, float]:
    """Best threshold per species (by :func:`sweep` on that species' queries) for each species with at least
    ``min_queries`` queries; the others are left out and take the global threshold."""
    out: dict[int, float] = {}
    for sp in np.unique(query_species):
        mask = query_species == sp
        if mask.sum() >= min_queries:
            out[int(sp)] = best_threshold(sweep(labels[mask], scores[mask], truth[mask], thresholds, new_ratio))
    return out


def query_thresholds(query_species: np.ndarray, global_thr: float, per_species: dict) -> np.ndarray:
    """(Q,) threshold per query: its species' own threshold where there is one, else the global one (species as
    numbers or names, as ``per_species`` keys them)."""
    return np.array([per_species.get(s, global_thr) for s in query_species.tolist()], dtype=np.float64)


def sweep_scores(labels: np.ndarray, scores: np.ndarray, truth: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per-query precision@5 for every threshold at once, (Q, T). ``truth`` uses :data:`NEW` for new individuals.
    ``thresholds`` may also be (Q, 1): one threshold per query."""
    truth = np.asarray(truth)
    p = new_positions(scores, np.asarray(thresholds))
    n = labels.shape[1]
    match = labels == truth[:, None]
    rank = np.where(match.any(axis=1), match.argmax(axis=1), n)[:, None]
    known_pos = np.where(rank < p, rank, rank + 1)
    known = np.where((rank < n) & (known_pos < n), 1.0 / (known_pos + 1), 0.0)
    new = np.where(p < n, 1.0 / (p + 1), 0.0)
    return np.where((truth == NEW)[:, None], new, known)


def blend(per_query: np.ndarray, truth: np.ndarray, new_ratio: float) -> tuple[np.ndarray, ...]:
    """From per-query precision (Q, T): the ``new_ratio``-weighted MAP@5, the plain one, and MAP@5 on known and
    on new individuals, each (T,) (NaN for a kind validation lacks; weighted = plain then)."""
    is_new = np.asarray(truth) == NEW
    overall = per_query.mean(axis=0)
    nan = np.full(per_query.shape[1], np.nan)
    known = per_query[~is_new].mean(axis=0) if (~is_new).any() else nan
    new = per_query[is_new].mean(axis=0) if is_new.any() else nan
    weighted = new_ratio * new + (1.0 - new_ratio) * known if is_new.any() and (~is_new).any() else overall
    return weighted, overall, known, new


def sweep(
    labels: np.ndarray, scores: np.ndarray, truth: np.ndarray, thresholds: Sequence[float], new_ratio: float
) -> pd.DataFrame:
    """MAP@5 per threshold: overall, on known and on new individuals, and the ``new_ratio``-weighted blend.

    The weighted score re-weights validation to a test set with ``new_ratio`` new individuals:
    ``new_ratio * MAP(new) + (1 - new_ratio) * MAP(known)``; when validation has only one kind, that kind's MAP.
    """
    weighted, overall, known, new = blend(sweep_scores(labels, scores, truth, thresholds), truth, new_ratio)
    return pd.DataFrame(
        {
            "threshold": np.asarray(thresholds, dtype=float),
            "map5": weighted,
            "map5_unweighted": overall,
            "map5_known": known,
            "map5_new": new,
        }
    )


def best_threshold(table: pd.DataFrame) -> float:
    """The threshold with the highest weighted MAP@5 (the lowest such threshold on ties)."""
    return float(table["threshold"].iloc[int(np.argmax(table["map5"].to_numpy()))])


def predict(labels: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Five distinct predictions per query (Q, 5) with :data:`NEW` inserted at the threshold (a float, or one
    threshold per query)."""
    thr = np.asarray(threshold, dtype=np.float64)
    p = new_positions(scores, thr.reshape(-1, 1) if thr.ndim == 1 else thr.reshape(1))[:, 0]
    n = labels.shape[1]
    out = np.empty_like(labels)
    for j in range(n):
        before = labels[:, j]
        after = labels[:, j - 1] if j > 0 else labels[:, 0]
        out[:, j] = np.where(j < p, before, np.where(j == p, NEW, after))
    return out


def query_truth(query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """Query labels, with :data:`NEW` for individuals absent from the gallery."""
    query_labels = np.asarray(query_labels)
    return np.where(np.isin(query_labels, gallery_labels), query_labels, NEW)


@dataclass(frozen=True)
class Rule:
    """A fitted new_individual rule, saved as JSON (:meth:`to_dict`) and applied as saved (:func:`apply_rule`).

    ``threshold`` is the global threshold (``method: sweep``); with ``method: share`` the threshold is taken on
    the queries it is applied to, so that new_individual comes first for ``new_ratio`` of them.
    ``species_thresholds`` maps species names to their own threshold (species of the top candidate)."""

    scoring: str = "max"
    vote_power: float = 4.0
    method: str = "sweep"
    threshold: float = 0.0
    new_ratio: float = 0.16
    species_thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "rule") -> Rule:
        """The rule saved in ``raw``, every field checked (``source`` names the file in the one-line error): a
        string or NaN threshold, or an unknown scoring, is refused rather than applied."""
        known = set(cls.__dataclass_fields__)
        if not isinstance(raw, dict) or not known >= set(raw) or "threshold" not in raw:
            raise DataError(f"{source}: not a whaleid rule (keys {sorted(known)} expected), got {raw!r:.200}")

        def bad(key: str, what: str) -> DataError:
            return DataError(
                f"{source}: {key} must be {what}, got {raw[key]!r:.80}; refit it with `dvc repro threshold`."
            )

        choices = {"scoring": ("max", "vote"), "method": ("sweep", "share")}
        for key, allowed in choices.items():
            if key in raw and raw[key] not in allowed:
                raise bad(key, " or ".join(allowed))
        ranges = {"threshold": (-1e6, 1e6), "vote_power": (1e-6, 1e3), "new_ratio": (0.0, 1.0)}
        for key, (lo, hi) in ranges.items():
            if key in raw and not _finite_in(raw[key], lo, hi):
                raise bad(key, f"a number in [{lo:g}, {hi:g}]")
        species = raw.get("species_thresholds", {})
        if not isinstance(species, dict) or not all(
            isinstance(k, str) and _finite_in(v, -1e6, 1e6) for k, v in species.items()
        ):
            raise bad("species_thresholds", "a mapping of species names to finite numbers")
        return cls(**raw)


def _finite_in(value: object, lo: float, hi: float) -> bool:
    """A real number (not a bool, a string or NaN) within [lo, hi]."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi


def rule_thresholds(rule: Rule, labels: np.ndarray, scores: np.ndarray, class_species: np.ndarray | None) -> np.ndarray:
    """The new_individual threshold ``rule`` applies to each query (its top candidate's species' own, else the
    global one; with ``method: share``, taken on these queries)."""
    threshold = share_threshold(scores, rule.new_ratio) if rule.method == "share" else rule.threshold
    if not rule.species_thresholds:
        return np.full(len(labels), threshold, dtype=np.float64)
    if class_species is None:
        raise ValueError("the rule has per-species thresholds: class_species is needed to apply it")
    return query_thresholds(np.asarray(class_species, dtype=object)[labels[:, 0]], threshold, rule.species_thresholds)


def apply_rule(rule: Rule, nn: Neighbours, class_species: np.ndarray | None = None) -> np.ndarray:
    """Five distinct predictions per query, (Q, 5) class numbers with :data:`NEW`, by ``rule``.
    ``class_species``: species name of every class (needed for per-species thresholds)."""
    return ranked(rule, nn, class_species)[0]


def ranked(rule: Rule, nn: Neighbours, class_species: np.ndarray | None = None, n: int = N_PRED) -> tuple:
    """:func:`apply_rule` in one pass with what it decided from: the (Q, 5) predictions, the (Q, max(n, 5))
    candidates and scores (the rule ranked the first five) and each query's threshold."""
    labels, scores = candidates(nn.sims, nn.rows, nn.gallery_labels, rule.scoring, rule.vote_power, n=max(n, N_PRED))
    thresholds = rule_thresholds(rule, labels, scores, class_species)
    return predict(labels[:, :N_PRED], scores[:, :N_PRED], thresholds), labels, scores, thresholds


@dataclass(frozen=True)
class RuleFit:
    """What :func:`fit_rule` returns: the rule, the sweep table (MAP@5 per threshold) and CV metrics."""

    rule: Rule
    table: pd.DataFrame
    metrics: dict


def _round(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 6)


def fit_rule(
    parts: Sequence[Neighbours],
    cfg: ThresholdConfig,
    new_ratio: float,
    *,
    class_species: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    warn: bool = True,
) -> RuleFit:
    """Fit the rule on validation queries of one or several fold models (out of fold: every query's candidates
    come from the model that did not train on it), pooled into one sweep.

    Args:
        parts: one :class:`Neighbours` with ``query_labels`` per fold model.
        cfg: the ``threshold`` params block (scoring, grid, method, per-species).
        new_ratio: the expected share of new individuals in test; weights MAP@5.
        class_species: species name of every class (for ``cfg.per_species``).
        names: a name per part (e.g. ``fold0``) for the per-fold metrics.
        warn: log a warning when validation has no new individuals (the rule then falls back to ``share``).

    Returns:
        the rule, the pooled sweep table and metrics: the weighted (``map5``), plain, known and new MAP@5 of the
        pooled queries with the fitted rule, and per part its weighted MAP@5 with mean and standard deviation.
    """
    if cfg.per_species and cfg.method != "sweep":
        raise ConfigError("threshold.per_species works with threshold.method: sweep only; set one of them back.")
    if not parts:
        raise ValueError("fit_rule needs at least one set of validation neighbours")
    names = list(names) if names is not None else [f"part{i}" for i in range(len(parts))]
    cands = [candidates(p.sims, p.rows, p.gallery_labels, cfg.scoring, cfg.vote_power) for p in parts]
    labels = np.concatenate([c[0] for c in cands])
    scores = np.concatenate([c[1] for c in cands])
    truth = np.concatenate([query_truth(p.query_labels, p.gallery_labels) for p in parts])
    part_of = np.repeat(np.arange(len(parts)), [len(p.sims) for p in parts])
    grid = cfg.grid()
    table = sweep(labels, scores, truth, grid, new_ratio)
    method = cfg.method
    if method == "sweep" and not (truth == NEW).any():
        if warn:
            log.warning(NO_NEW_WARNING.format(ratio=new_ratio))
        method = "share"
    threshold = best_threshold(table) if method == "sweep" else share_threshold(scores, new_ratio)
    species: dict[str, float] = {}
    if cfg.per_species and method == "sweep":
        if class_species is None:
            raise ValueError("threshold.per_species needs class_species")
        query_species = np.asarray(class_species, dtype=object)[labels[:, 0]]
        codes, inverse = np.unique(query_species.astype(str), return_inverse=True)
        found = species_thresholds(
            labels,
            scores,
            truth,
            query_species=inverse,
            thresholds=grid,
            new_ratio=new_ratio,
            min_queries=cfg.min_species_queries,
        )
        species = {str(codes[s]): t for s, t in sorted(found.items())}
    rule = Rule(cfg.scoring, cfg.vote_power, method, float(threshold), new_ratio, species)
    thr_q = rule_thresholds(rule, labels, scores, class_species)
    per_query = sweep_scores(labels, scores, truth, thr_q[:, None])
    weighted, overall, known, new = (float(x[0]) for x in blend(per_query, truth, new_ratio))
    per_part = {
        name: float(blend(per_query[part_of == i], truth[part_of == i], new_ratio)[0][0])
        for i, name in enumerate(names)
    }
    metrics = {
        "map5": _round(weighted),
        "threshold": rule.threshold,
        "method": method,  # threshold.method, or "share" where validation has no new individual to sweep on
        "species_thresholds": species,
        "map5_unweighted": _round(overall),
        "map5_known": _round(known),
        "map5_new": _round(new),
        "valid_images": int(len(truth)),
        "valid_new_share": _round(float(np.mean(truth == NEW))),
        "valid_new_first_share": _round(float(np.mean(new_positions(scores, thr_q[:, None])[:, 0] == 0))),
        "folds": {name: _round(v) for name, v in per_part.items()},
        "folds_mean": _round(float(np.mean(list(per_part.values())))),
        "folds_std": _round(float(np.std(list(per_part.values())))),
    }
    return RuleFit(rule, table, metrics)


def oracle_map5(
    nn: Neighbours,
    truth: np.ndarray,
    scoring: str = "max",
    power: float = 4.0,
    thresholds: Sequence[float] | None = None,
) -> tuple[float, float]:
    """The best plain MAP@5 over ``thresholds`` (default: 0 to 1 by 0.01) when the threshold is chosen on the
    answers themselves (``truth``: class numbers, :data:`NEW` for new individuals), and that threshold: a ceiling
    for a method's rule, used to compare methods independently of threshold fitting."""
    grid = list(thresholds) if thresholds is not None else [round(0.01 * i, 2) for i in range(101)]
    labels, scores = candidates(nn.sims, nn.rows, nn.gallery_labels, scoring, power)
    per_query = sweep_scores(labels, scores, np.asarray(truth), grid).mean(axis=0)
    best = int(np.argmax(per_query))
    return float(per_query[best]), grid[best]
