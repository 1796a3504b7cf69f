"""Artifact locations, relative to the repository root (mirrored in dvc.yaml)."""

from pathlib import Path

SAMPLE_DIR = Path("data/sample")
LABELS = Path("data/prepared/labels.json")
FOLDS = Path("data/prepared/folds.csv")
RESIZED_DIR = Path("data/resized")
RESIZE_CACHE = Path(".whaleid_cache/resize")
MODEL = Path("models/model.pt")
ENSEMBLE_DIR = Path("models/ensemble")
FINAL_DIR = Path("data/final")
CHECKPOINT_DIR = Path(".whaleid_cache/checkpoints")
DVCLIVE_DIR = Path("dvclive")
EMBED_DIR = Path("data/embeddings")
NEIGHBOR_DIR = Path("data/neighbors")
CV_METRICS = Path("metrics/cv.json")
LB_METRICS = Path("metrics/lb.json")
BASELINE_METRICS = Path("metrics/baseline.json")
THRESHOLD_PLOT = Path("plots/threshold.csv")
SUBMISSION = Path("submissions/submission.csv")
