"""Artifact locations, relative to the repository root (mirrored in dvc.yaml).

Trained models are named: ``fold0`` .. ``foldN`` (trained without that validation fold) and ``full`` (trained on
every image). Each has its own folder of outputs, written by its own DVC stage.
"""

from pathlib import Path

SAMPLE_DIR = Path("data/sample")
LABELS = Path("data/prepared/labels.json")
FOLDS = Path("data/prepared/folds.csv")
DETECT_DIR = Path("data/detect")  # stage `detect`: boxes.csv (what every later stage crops to), the detector
QUERY_BOXES = DETECT_DIR / "query_boxes.csv"  # the detector's boxes of the train photos, for validation queries
DETECT_METRICS = Path("metrics/detect.json")
DETECT_CACHE = Path(".whaleid_cache/detect")  # stage `detect`: decoded photos, kept only to resume a cut run
RESIZED_DIR = Path("data/resized")
QUERY_IMAGES = "query_images"  # data/resized/: the train photos as validation queries are cropped (query_boxes.csv)
RESIZE_CACHE = Path(".whaleid_cache/resize")
MODELS_DIR = Path("models")
RULE = Path("models/rule.json")
WEIGHTS_ID = Path("models/weights.json")  # which pretrained weights the backbones start from (stage `weights`)
DESCRIPTOR_ID = Path("models/descriptor.json")  # the frozen descriptor's weights (stage `weights`; keypoints reads)
FINAL_DIR = Path("data/final")
CHECKPOINT_DIR = Path(".whaleid_cache/checkpoints")
EMBED_DIR = Path("data/embeddings")
NEIGHBOUR_DIR = Path("data/neighbours")
KEYPOINT_DIR = Path("data/keypoints")
FUSED_DIR = Path("data/fused")
ROUNDS_DIR = Path("data/rounds")  # stage `pseudo`: the neighbours the rule is fitted on and applied to
PSEUDO_CACHE = Path(".whaleid_cache/pseudo")  # finished pseudo-label round models, reused after an interruption
CV_METRICS = Path("metrics/cv.json")
CV_DETAILS = Path("metrics/cv_details.json")  # stage `threshold`: what cv.json leaves out (retrieval, shortlist)
LB_METRICS = Path("metrics/lb.json")
PSEUDO_METRICS = Path("metrics/pseudo.json")
BASELINE_METRICS = Path("metrics/baseline.json")
THRESHOLD_PLOT = Path("plots/threshold.csv")
OOF_PREDICTIONS = Path("metrics/oof_predictions.csv")
SUBMISSION = Path("submissions/submission.csv")
MATCH_REPORT = Path("reports/matches.html")  # stage `report`
PLOTS_TEMPLATE = Path("reports/plots_template.html")  # stage `plots_page`: the page `dvc plots show` fills
GALLERY_DIR = Path("gallery")  # stage `gallery`: the catalogue `whaleid identify` searches


def model_path(name: str) -> Path:
    """The trained model ``name`` (``fold0``, ``full``): stage ``train`` or ``member@<name>``."""
    return MODELS_DIR / name / "model.pt"


def live_dir(name: str) -> Path:
    """Training curves (dvclive) of model ``name``."""
    return MODELS_DIR / name / "live"


def embed_dir(name: str) -> Path:
    """Embeddings of every training image (``train.npz``, folds.csv order) and test image (``test.npz``) by model
    ``name``: stage ``embed`` or ``member_embed@<name>``."""
    return EMBED_DIR / name
