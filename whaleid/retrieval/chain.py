"""The scoring chain, in one place: query embeddings -> search -> re-rank -> blend -> local-feature fusion -> the
:class:`~whaleid.retrieval.neighbours.Neighbours` the prediction rule consumes.

The stages (``knn`` runs :meth:`ScoringChain.neighbours`, ``local`` :meth:`ScoringChain.fit_fusion` on validation and
:meth:`ScoringChain.fuse` on test), pseudo-label rounds and the gallery behind ``whaleid identify``
(:meth:`ScoringChain.score`) all call this object, so a photo identified against the gallery gets exactly the
submission's scores, and a new score to fuse is added here once:

1. **search**: the gallery's ``knn.k`` nearest photos by cosine (Faiss; the gallery folder's own saved index);
2. **re-rank** (``knn.rerank``): k-reciprocal re-ordering of those candidates;
3. **blend** (``blend.knn_weight`` < 1): each neighbour's cosine mixed with its individual's ArcFace class-centre
   cosine, plus the individuals nearest by class centre (:mod:`whaleid.retrieval.blend`);
4. **fusion** (``local.method`` or ``local.refine`` set): each query's best candidates matched by local features
   (``local.top_pairs`` by ``local.method``; the best ``local.refine_pairs`` again by ``local.refine``, a learned
   matcher: a cascade), and the scores turned into one calibrated probability (:mod:`whaleid.retrieval.fusion`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from whaleid.config import BlendConfig, KnnConfig, LocalConfig
from whaleid.core.runtime import Runtime
from whaleid.retrieval.blend import Centres, blend_neighbours, mean_cosines
from whaleid.retrieval.fusion import Calibration
from whaleid.retrieval.keypoints import KeypointSet
from whaleid.retrieval.matching import neighbour_scores
from whaleid.retrieval.neighbours import Neighbours
from whaleid.retrieval.rerank import rerank_neighbours
from whaleid.retrieval.search import search

# (queries (Q, d), k) -> (similarities (Q, k), gallery rows (Q, k)), best first, -1 where fewer than k
Searcher = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
# Local features of a set of photos, by local-feature method ("sift", "aliked", ...)
Keypoints = Mapping[str, KeypointSet]


@dataclass(frozen=True)
class Photos:
    """Photos as the chain compares them.

    Attributes:
        embeddings: (N, d) unit rows: the submission models' embeddings combined.
        images: (N,) file names.
        labels: (N,) class numbers (-1 where unknown: test photos).
        parts: each model's own (N, d_m) embeddings, for the class-centre cosines of the blend (empty: no blend).
    """

    embeddings: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    parts: tuple[np.ndarray, ...] = ()

    def __len__(self) -> int:
        return len(self.embeddings)

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray], parts: Sequence[np.ndarray] = ()) -> Photos:
        """From an embed stage's arrays (``embeddings``, ``images``, ``labels``)."""
        return cls(arrays["embeddings"], np.asarray(arrays["images"]), np.asarray(arrays["labels"]), tuple(parts))

    def take(self, rows: np.ndarray) -> Photos:
        """The photos at ``rows`` (indices or a boolean mask), parts alike."""
        return Photos(self.embeddings[rows], self.images[rows], self.labels[rows], tuple(p[rows] for p in self.parts))


@dataclass(frozen=True)
class Fusion:
    """What fitting the fusion on validation gives: the fused validation results, the calibration (None with
    ``local.method: none``) and statistics of the pairs it was fitted on."""

    valid: dict[str, Neighbours]
    calibration: Calibration | None
    stats: dict


@dataclass(frozen=True)
class ScoringChain:
    """The submission's scoring, configured by the ``knn``, ``blend`` and ``local`` params blocks."""

    knn: KnnConfig
    blend: BlendConfig
    local: LocalConfig
    run: Runtime = Runtime()

    @property
    def fuses(self) -> bool:
        return self.local.fuses

    # --- 1-3: search, re-rank, blend --------------------------------------------------------------------------
    def neighbours(
        self,
        query: Photos,
        gallery: Photos,
        *,
        centres: Sequence[Centres] = (),
        searcher: Searcher | None = None,
    ) -> Neighbours:
        """Search, re-rank and blend ``query`` against ``gallery``. ``centres``: each model's class centres, in the
        order of ``query.parts`` (needed when the blend is on); ``searcher``: a saved index (default: exact search
        over ``gallery.embeddings``)."""
        if searcher is None:
            sims, rows = search(gallery.embeddings, query.embeddings, self.knn)  # top min(k, gallery size)
        else:
            sims, rows = searcher(
                np.ascontiguousarray(query.embeddings, dtype=np.float32), min(self.knn.k, len(gallery))
            )
        sims, rows = rerank_neighbours(query.embeddings, gallery.embeddings, sims, rows, self.knn)
        if self.blend.knn_weight < 1.0:
            if len(centres) != len(query.parts) or not centres:
                raise ValueError(f"the blend needs one set of centres per model: {len(centres)} for {len(query.parts)}")
            cosines = mean_cosines(list(zip(query.parts, centres, strict=True)))
            sims, rows = blend_neighbours(
                sims,
                rows,
                gallery.labels,
                class_cosines=cosines,
                knn_weight=self.blend.knn_weight,
                extra=self.blend.extra_classes,
            )
        return Neighbours(
            sims=np.asarray(sims, dtype=np.float32),
            rows=np.asarray(rows, dtype=np.int64),
            gallery_labels=gallery.labels,
            query_labels=None if (query.labels < 0).all() else query.labels,
            query_images=query.images,
            gallery_images=gallery.images,
        )

    # --- 4: local-feature fusion ------------------------------------------------------------------------------
    @property
    def shortlist(self) -> int:
        """How many of each query's best candidates local features look at (``local.top_pairs``, or only
        ``local.refine_pairs`` with a learned matcher alone): what fusion can reorder."""
        cfg = self.local
        return cfg.refine_pairs if cfg.method == "none" and cfg.refine != "none" else cfg.top_pairs

    def pair_scores(self, nn: Neighbours, query_kp: Keypoints, gallery_kp: Keypoints, desc: str) -> dict:
        """Every score the fusion combines, (Q, k) each: the chain's score so far (``cosine``), ``local.method``'s
        match score of the first ``local.top_pairs`` candidates (``inliers``) and ``local.refine``'s of the first
        ``local.refine_pairs`` (``refined``), 0 beyond them; and the frozen descriptor's cosine of every candidate
        (``descriptor``, with ``local.descriptor``). A new score to fuse is added here and in
        :data:`whaleid.retrieval.fusion.TRANSFORMS`."""
        scores = {"cosine": nn.sims}
        cfg = self.local
        for name, method, top in (("inliers", cfg.method, cfg.top_pairs), ("refined", cfg.refine, cfg.refine_pairs)):
            if method != "none":
                scores[name] = neighbour_scores(
                    method,
                    nn,
                    query_kp[method],
                    gallery_kp[method],
                    cfg,
                    top=top,
                    desc=f"{desc} ({method})",
                    run=self.run,
                )
        if cfg.descriptor:
            k = nn.rows.shape[1]
            scores["descriptor"] = neighbour_scores(
                "descriptor", nn, query_kp["descriptor"], gallery_kp["descriptor"], cfg, top=k, run=self.run
            )
        return scores

    def fit_fusion(
        self, valid: Mapping[str, Neighbours], keypoints: Keypoints | None, query_kp: Keypoints | None = None
    ) -> Fusion:
        """Match every validation query (a training photo, as is its gallery: ``keypoints`` hold both, by method;
        ``query_kp`` the queries where they are cropped otherwise) against its best candidates, fit the
        :class:`Calibration` on those pairs and fuse the validation results."""
        if not self.fuses:
            return Fusion(dict(valid), None, {})
        top = self.shortlist
        query_kp = query_kp or keypoints
        scores = {name: self.pair_scores(nn, query_kp, keypoints, f"match {name}") for name, nn in valid.items()}
        real = np.concatenate([nn.valid[:, :top].ravel() for nn in valid.values()])  # not the empty slots
        keys = list(next(iter(scores.values())))
        pooled = {key: np.concatenate([scores[name][key][:, :top].ravel() for name in valid])[real] for key in keys}
        same = np.concatenate([nn.same_individual()[:, :top].ravel() for nn in valid.values()])[real]
        calibration = Calibration.fit(pooled, same, self.local.calibration)
        stats: dict = {"valid_pairs": int(same.size)}
        for key in keys[1:]:
            stats[f"{key}_same_mean"] = round(float(pooled[key][same].mean()), 3) if same.any() else None
            stats[f"{key}_other_mean"] = round(float(pooled[key][~same].mean()), 3) if (~same).any() else None
        fused = {name: nn.rescored(calibration(scores[name])) for name, nn in valid.items()}
        return Fusion(fused, calibration, stats)

    def fuse(
        self,
        nn: Neighbours,
        calibration: Calibration | None,
        query_kp: Keypoints | None,
        gallery_kp: Keypoints | None,
        desc: str = "match",
    ) -> Neighbours:
        """``nn`` rescored by the fitted ``calibration`` (unchanged without one, or without keypoints)."""
        return self.fuse_with_inliers(nn, calibration, query_kp, gallery_kp, desc)[0]

    def fuse_with_inliers(
        self,
        nn: Neighbours,
        calibration: Calibration | None,
        query_kp: Keypoints | None,
        gallery_kp: Keypoints | None,
        desc: str = "match",
    ) -> tuple[Neighbours, np.ndarray | None]:
        """:meth:`fuse`, and ``local.method``'s raw match score of each pair in the fused order ((Q, k): SIFT's
        RANSAC inliers, a learned matcher's confident matches; NaN beyond ``local.top_pairs``), None unfused."""
        if not self.fuses or calibration is None or not query_kp or not gallery_kp:
            return nn, None
        scores = self.pair_scores(nn, query_kp, gallery_kp, desc)
        if "inliers" not in scores:
            return nn.rescored(calibration(scores)), None
        raw = scores["inliers"].astype(np.float32).copy()
        raw[:, self.local.top_pairs :] = np.nan  # not matched
        fused, raw = nn.rescored_with(calibration(scores), raw)
        return fused, raw

    # --- the whole chain --------------------------------------------------------------------------------------
    def score(
        self,
        query: Photos,
        gallery: Photos,
        *,
        centres: Sequence[Centres] = (),
        searcher: Searcher | None = None,
        calibration: Calibration | None = None,
        query_kp: Keypoints | None = None,
        gallery_kp: Keypoints | None = None,
    ) -> tuple[Neighbours, np.ndarray | None]:
        """Steps 1-4 with an already fitted calibration: what a test photo gets, and each pair's raw local match
        score beside it (see :meth:`fuse_with_inliers`; None without local features)."""
        nn = self.neighbours(query, gallery, centres=centres, searcher=searcher)
        return self.fuse_with_inliers(nn, calibration, query_kp, gallery_kp)
