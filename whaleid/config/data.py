"""The data blocks of params.yaml: ``data``, ``sample`` (the generated default), ``cv`` (the split), ``crop``,
``detect`` and ``resize``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from whaleid.config.base import Block, Share, span


class DataConfig(Block):
    """Where the dataset in the Kaggle layout lives, and the largest photo it may hold."""

    block: ClassVar[str] = "data"
    dir: str = "data/sample"
    max_megapixels: float = span(100.0, 0.01, 10000.0)  # decoding takes 3 bytes a pixel per worker: 300 MB by default


class SampleConfig(Block):
    """Generated dataset (see ``whaleid.data.sample``)."""

    block: ClassVar[str] = "sample"
    n_train: int = Field(2400, gt=0, le=1_000_000)
    n_test: int = Field(800, gt=0, le=1_000_000)
    n_species: int = span(6, 1, 26)
    img_size: int = span(160, 16, 4096)
    new_share: float = span(0.16, 0.0, 0.95)
    tail_exponent: float = Field(2.0, gt=1, le=10, description="a Zipf exponent")
    max_images_per_id: int = span(40, 1, 100000)
    min_images_per_id: int = Field(
        1, ge=1, le=1000
    )  # e.g. 6: no rare individuals (as in camera-trap, zoo or farm sets)
    mirror_prob: Share = 0.15
    jpeg_quality_min: int = span(60, 1, 100)
    jpeg_quality_max: int = span(95, 1, 100)
    subject_min: float = span(0.2, 0.05, 1.0)  # fin base width, share of the photo width (0.55-0.85: fin fills it)
    subject_max: float = span(0.45, 0.05, 1.0)
    off_centre: Share = 1.0  # 0: fin near the centre | 1: anywhere, partly cut off at an edge now and then
    clutter: int = span(6, 0, 50)  # at most this many distractors per photo (rocks, boats, birds, foam, far fins)
    occlusion: Share = 0.3  # chance that splash or debris hides part of the fin
    mark_contrast_min: float = span(0.35, 0.0, 1.0)  # markings at a per-photo contrast between this and 1
    test_boxes: bool = False  # boxes.csv covers test photos too (false: they go to solution_boxes.csv, an answer key)
    seed: int = Field(42, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _order(self) -> SampleConfig:
        self.check_range("min_images_per_id", 1, self.max_images_per_id)
        self.check_range("jpeg_quality_max", self.jpeg_quality_min, 100)
        self.check_range("subject_max", self.subject_min, 1.0)
        return self


class CVConfig(Block):
    """Stratified k-fold split on individual_id, and how validation is weighted."""

    block: ClassVar[str] = "cv"
    n_folds: int = span(5, 2, 100)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    new_ratio: float = span(0.16, 0.0, 1.0)  # expected share of new individuals in test; weights validation MAP@5
    min_new_share: float = span(0.16, 0.0, 0.9)  # hold individuals out of a fold's training until this share is new


class CropConfig(Block):
    """Optional crop of each image to a box (``image,x1,y1,x2,y2`` CSV) before resizing."""

    block: ClassVar[str] = "crop"
    boxes: str | None = "auto"  # auto: <data.dir>/boxes.csv if there is one | a CSV path | None: whole images
    margin: float = span(0.1, 0.0, 2.0)  # grow each box by this share of its width/height on every side


class DetectConfig(Block):
    """Box detector (stage ``detect``, :mod:`whaleid.model.boxnet`): trained on the train photos' boxes, it draws the
    boxes of the photos that have none (the test photos; any photo ``whaleid identify`` is given)."""

    block: ClassVar[str] = "detect"
    use: Literal["auto", "always", "never"] = "auto"  # auto: when the boxes leave test photos without one
    backbone: str = "test_resnet"  # any timm CNN
    pretrained: bool = False  # timm's ImageNet weights from the Hugging Face hub cache
    img_size: int = span(96, 32, 2048)
    epochs: int = Field(8, gt=0, le=1000)
    batch_size: int = Field(32, gt=0, le=4096)
    lr: float = Field(0.003, gt=0, le=10)
    holdout: float = span(0.1, 0.0, 0.5)  # share of the boxed train photos held back to measure IoU
    train_crops: Literal["truth", "predicted"] = "truth"  # train photos cropped to their own boxes or the detector's
    # Validation queries (train photos) cropped to the detector's boxes, as the test photos are, so the rule and the
    # calibration are fitted under test conditions (predicted); or like the photos they are searched among (truth).
    valid_crops: Literal["predicted", "truth"] = "predicted"
    seed: int = Field(42, ge=0, le=2**32 - 1)


class ResizeConfig(Block):
    """File format of the resized images (stage ``resize``): bmp (lossless, fastest to decode: ~0.006 ms at 64 px
    against png's ~0.14), png (lossless, about half bmp's size) or jpg (``jpeg_quality``; lossy, smallest)."""

    block: ClassVar[str] = "resize"
    format: Literal["bmp", "png", "jpg"] = "bmp"
    jpeg_quality: int = span(95, 1, 100)
