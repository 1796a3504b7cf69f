"""Calibrated fusion (WildFusion-style): several scores of a (query, gallery photo) pair become one probability that
both show the same individual, and that probability ranks the candidates and meets the new_individual threshold.

A :class:`Calibration` is a logistic regression over the pair's scores, each entering as :data:`TRANSFORMS` says
(cosines as they are, match counts on a log scale), fitted on the validation queries' pairs (same individual or
not) and applied as saved to the test photos and to ``whaleid identify``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from whaleid.core.errors import DataError

# How each score of a pair enters the logistic regression.
TRANSFORMS = {"cosine": lambda x: x, "inliers": np.log1p}


def _features(names: tuple[str, ...], scores: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.stack([TRANSFORMS[n](np.asarray(scores[n], np.float64)).ravel() for n in names], 1)


@dataclass(frozen=True)
class Calibration:
    """P(same individual | scores) = sigmoid(bias + sum_i weights[i] * transform_i(scores[names[i]]))."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float

    @classmethod
    def fit(cls, scores: Mapping[str, np.ndarray], same: np.ndarray) -> Calibration:
        """Logistic regression on validation pairs: ``scores`` name -> (P,) score of each pair, ``same`` (P,) True
        where the pair shows one individual."""
        from sklearn.linear_model import LogisticRegression

        same = np.asarray(same, dtype=bool).ravel()
        if same.all() or not same.any():
            raise ValueError("calibration needs validation pairs of both kinds (same and different individuals)")
        names = tuple(scores)
        model = LogisticRegression(C=10.0, max_iter=1000).fit(_features(names, scores), same)
        return cls(names, tuple(float(w) for w in model.coef_[0]), float(model.intercept_[0]))

    def __call__(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """The probability of every pair, float32 in the shape of the scores."""
        x = _features(self.names, scores)
        z = self.bias
        for i, w in enumerate(self.weights):  # term by term, in the order the fit gave them
            z = z + w * x[:, i]
        return (1.0 / (1.0 + np.exp(-z))).reshape(np.shape(scores[self.names[0]])).astype(np.float32)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "weights": list(self.weights), "bias": self.bias}

    @classmethod
    def from_dict(cls, raw: object, where: str = "calibration") -> Calibration:
        """From :meth:`to_dict`'s form, or the (cosine, inliers) form of galleries written before it."""
        if isinstance(raw, dict) and {"bias", "w_cos", "w_inliers"} == set(raw):
            raw = {"names": ["cosine", "inliers"], "weights": [raw["w_cos"], raw["w_inliers"]], "bias": raw["bias"]}
        ok = isinstance(raw, dict) and set(raw) == {"names", "weights", "bias"}
        ok = ok and isinstance(raw["names"], list) and set(raw["names"]) <= set(TRANSFORMS)
        ok = ok and isinstance(raw["weights"], list) and len(raw["weights"]) == len(raw["names"])
        values = [*raw["weights"], raw["bias"]] if ok else []
        if not ok or not all(isinstance(v, int | float) and np.isfinite(v) for v in values):
            raise DataError(
                f"{where}: not a whaleid calibration (names, weights, bias as finite numbers): {raw!r:.200}"
            )
        return cls(tuple(raw["names"]), tuple(float(w) for w in raw["weights"]), float(raw["bias"]))

    def __str__(self) -> str:
        terms = " + ".join(f"{w:.3f} * {n}" for n, w in zip(self.names, self.weights, strict=True))
        return f"sigmoid({self.bias:.3f} + {terms})"
