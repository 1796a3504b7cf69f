"""Calibrated fusion (WildFusion-style): several scores of a (query, gallery photo) pair become one probability that
both show the same individual, and that probability ranks the candidates and meets the new_individual threshold.

The scores (:data:`TRANSFORMS`): ``cosine`` (the chain's score so far), ``inliers`` (``local.method``'s match
score), ``refined`` (``local.refine``'s, on the best few candidates; 0 elsewhere) and ``descriptor`` (the cosine of a
frozen pretrained backbone's global descriptors, ``local.descriptor``). A :class:`Calibration` is
fitted on the validation queries' pairs (same individual or not) and applied as saved to the test photos and to
``whaleid identify``'s (``local.calibration``):

* ``logistic``: one logistic regression over the scores, each entering as :data:`TRANSFORMS` says (cosines as they
  are, match counts on a log scale);
* ``isotonic``: each score calibrated on its own by isotonic regression (a monotone step function from score to
  P(same)), the probabilities averaged, as WildFusion does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from whaleid.core.errors import DataError

# How each score of a pair enters the logistic regression.
TRANSFORMS = {"cosine": lambda x: x, "inliers": np.log1p, "refined": np.log1p, "descriptor": lambda x: x}
KINDS = ("logistic", "isotonic")


def _features(names: tuple[str, ...], scores: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.stack([TRANSFORMS[n](np.asarray(scores[n], np.float64)).ravel() for n in names], 1)


@dataclass(frozen=True)
class Calibration:
    """P(same individual | scores).

    ``logistic``: sigmoid(bias + sum_i weights[i] * transform_i(scores[names[i]])). ``isotonic``: the mean over
    ``names`` of each score's step function ``knots[name]`` = (score thresholds, probabilities), linear between.
    """

    names: tuple[str, ...]
    weights: tuple[float, ...] = ()
    bias: float = 0.0
    kind: str = "logistic"
    knots: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=dict)

    @classmethod
    def fit(cls, scores: Mapping[str, np.ndarray], same: np.ndarray, kind: str = "logistic") -> Calibration:
        """Fit on validation pairs: ``scores`` name -> (P,) score of each pair, ``same`` (P,) True where the pair
        shows one individual."""
        same = np.asarray(same, dtype=bool).ravel()
        if same.all() or not same.any():
            raise ValueError("calibration needs validation pairs of both kinds (same and different individuals)")
        names = tuple(scores)
        if kind == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            knots = {}
            for name in names:
                iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
                iso.fit(np.asarray(scores[name], np.float64).ravel(), same.astype(np.float64))
                knots[name] = (tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_)))
            return cls(names, kind="isotonic", knots=knots)
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=10.0, max_iter=1000).fit(_features(names, scores), same)
        return cls(names, tuple(float(w) for w in model.coef_[0]), float(model.intercept_[0]))

    def __call__(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """The probability of every pair, float32 in the shape of the scores."""
        shape = np.shape(scores[self.names[0]])
        if self.kind == "isotonic":
            probs = [np.interp(np.asarray(scores[n], np.float64).ravel(), *self.knots[n]) for n in self.names]
            return np.mean(probs, axis=0).reshape(shape).astype(np.float32)
        x = _features(self.names, scores)
        z = self.bias
        for i, w in enumerate(self.weights):  # term by term, in the order the fit gave them
            z = z + w * x[:, i]
        return (1.0 / (1.0 + np.exp(-z))).reshape(shape).astype(np.float32)

    def to_dict(self) -> dict:
        if self.kind == "isotonic":
            return {
                "kind": "isotonic",
                "names": list(self.names),
                "knots": {n: list(map(list, k)) for n, k in self.knots.items()},
            }
        return {"names": list(self.names), "weights": list(self.weights), "bias": self.bias}

    @classmethod
    def from_dict(cls, raw: object, where: str = "calibration") -> Calibration:
        """From :meth:`to_dict`'s forms, or the (cosine, inliers) form of galleries written before them; checked."""
        if isinstance(raw, dict) and {"bias", "w_cos", "w_inliers"} == set(raw):
            raw = {"names": ["cosine", "inliers"], "weights": [raw["w_cos"], raw["w_inliers"]], "bias": raw["bias"]}
        bad = DataError(f"{where}: not a whaleid calibration (names, and weights and bias or knots): {raw!r:.200}")
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("names"), list)
            or not set(raw["names"]) <= set(TRANSFORMS)
        ):
            raise bad
        if raw.get("kind") == "isotonic":
            knots = raw.get("knots")
            if set(raw) != {"kind", "names", "knots"} or not isinstance(knots, dict) or set(knots) != set(raw["names"]):
                raise bad
            try:
                parsed = {n: (tuple(map(float, knots[n][0])), tuple(map(float, knots[n][1]))) for n in raw["names"]}
            except (TypeError, ValueError, IndexError):
                raise bad from None
            if any(len(x) != len(y) or not x or not np.isfinite([*x, *y]).all() for x, y in parsed.values()):
                raise bad
            return cls(tuple(raw["names"]), kind="isotonic", knots=parsed)
        if set(raw) != {"names", "weights", "bias"} or not isinstance(raw["weights"], list):
            raise bad
        values = [*raw["weights"], raw["bias"]]
        if len(raw["weights"]) != len(raw["names"]) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in values
        ):
            raise bad
        return cls(tuple(raw["names"]), tuple(float(w) for w in raw["weights"]), float(raw["bias"]))

    def __str__(self) -> str:
        if self.kind == "isotonic":
            return f"mean of isotonic P(same | {'), P(same | '.join(self.names)})"
        terms = " + ".join(f"{w:.3f} * {n}" for n, w in zip(self.names, self.weights, strict=True))
        return f"sigmoid({self.bias:.3f} + {terms})"
