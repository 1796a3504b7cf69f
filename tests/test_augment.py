"""Batched augmentation (whaleid.model.augment) against OpenCV, albumentations' formulas and hand-made cases."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from whaleid.config import AugmentConfig
from whaleid.model.augment import (
    BatchAugment,
    affine_grid,
    affine_theta,
    batch_generator,
    gaussian_blur,
    model_input,
    normalize,
    to_float,
    warp_matrices,
)

OFF = dict(hflip=0.0, affine=0.0, color=0.0, blur=0.0, dropout=0.0)


def _images(n: int = 8, h: int = 24, w: int = 32, low: int = 0, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images (B, H, W, 3) with values in [low, 255]."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(low, 255, size=(n, h // 4, w // 4, 3)).astype(np.float32)
    big = np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_CUBIC) for s in small])
    return torch.from_numpy(np.clip(big, low, 255).round().astype(np.uint8))


def _run(cfg: AugmentConfig, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return BatchAugment(cfg)(to_float(images), batch_generator(seed, 0, 0))


@pytest.mark.parametrize(
    ("angle", "sx", "sy", "dx", "dy"),
    [
        (0, 1, 1, 0, 0),
        (12, 1, 1, 0, 0),
        (-25, 1.15, 1.15, 3, -2),
        (40, 0.85, 0.85, -4, 5),
        (-10, 0.9, 1.12, 2, 1),
    ],
)
def test_affine_matches_opencv_warp(angle: float, sx: float, sy: float, dx: float, dy: float) -> None:
    img = _images(1, 30, 40)[0].numpy().astype(np.float32)
    h, w = img.shape[:2]
    # rotate(scale(p - centre)) + centre + shift, as albumentations' Affine builds it, for OpenCV to apply
    rad = np.deg2rad(angle)
    rot = np.array([[np.cos(rad), np.sin(rad)], [-np.sin(rad), np.cos(rad)]])
    linear = rot @ np.diag([sx, sy])
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    m = np.hstack([linear, (centre - linear @ centre + [dx, dy])[:, None]])
    if sx == sy:  # then it is OpenCV's own rotation matrix
        ref = cv2.getRotationMatrix2D(tuple(centre), angle, sx)
        np.testing.assert_allclose(m, ref + [[0, 0, dx], [0, 0, dy]], atol=1e-9)
    want = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    theta = affine_theta(
        torch.tensor([angle], dtype=torch.float32),
        torch.tensor([[sx, sy]], dtype=torch.float32),
        torch.tensor([[dx, dy]], dtype=torch.float32),
        h,
        w,
    )
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    got = F.grid_sample(
        x,
        F.affine_grid(theta, [1, 3, h, w], align_corners=False),
        mode="bilinear",
        padding_mode="reflection",
        align_corners=False,
    )
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), want, atol=1e-3)


def test_affine_grid_is_torch_affine_grid_to_float_rounding() -> None:
    # Bit for bit on AVX2 CPUs; on an AVX-512 one torch's batched product rounds the last bit of about one
    # coordinate in eight differently (seen: at most 4.8e-7 on coordinates of magnitude ~3).
    gen = torch.Generator().manual_seed(0)
    for h, w in ((64, 64), (17, 23)):
        for _ in range(20):
            theta = torch.randn(9, 2, 3, generator=gen)
            want = F.affine_grid(theta, [9, 3, h, w], align_corners=False)
            torch.testing.assert_close(affine_grid(theta, h, w), want, rtol=0, atol=2e-6)


def test_blur_matches_opencv_per_image() -> None:
    from whaleid.model.augment import gaussian_kernels

    imgs = _images(3, 20, 28, seed=3).numpy().astype(np.float32)
    sizes, sigmas = torch.tensor([3, 5, 5]), torch.tensor([0.5, 1.3, 3.0])
    got = gaussian_blur(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), gaussian_kernels(sigmas, sizes))
    for img, out, k, sigma in zip(imgs, got, sizes.tolist(), sigmas.tolist(), strict=True):
        want = cv2.GaussianBlur(img, (k, k), sigma)
        np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), want, atol=1e-3)


def test_normalize_matches_albumentations() -> None:
    import albumentations as A

    from whaleid.model.augment import MEAN, STD

    img = _images(1)[0]
    want = A.Normalize(MEAN, STD)(image=img.numpy())["image"].transpose(2, 0, 1)
    batch = model_input(img[None], torch.device("cpu"))
    np.testing.assert_allclose(batch[0].numpy(), want, atol=1e-5)
    assert batch.is_contiguous(memory_format=torch.channels_last)  # as the models are kept: no copy in the model


def test_model_input_is_normalize_bit_for_bit() -> None:
    # the uint8 fast path (rows of repeated means) against the broadcasting `normalize`, on a non-square batch
    images = torch.randint(0, 256, (5, 24, 40, 3), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    got = model_input(images, torch.device("cpu"))
    torch.testing.assert_close(got, normalize(to_float(images)), atol=0, rtol=0)
    assert got.shape == (5, 3, 24, 40) and got.is_contiguous(memory_format=torch.channels_last)


def test_all_off_is_identity_and_flip_mirrors() -> None:
    images = _images()
    torch.testing.assert_close(_run(AugmentConfig(**OFF), images), to_float(images), atol=0, rtol=0)
    flipped = _run(AugmentConfig(**{**OFF, "hflip": 1.0}), images)
    torch.testing.assert_close(flipped, to_float(images).flip(-1), atol=0, rtol=0)


def test_brightness_contrast_is_one_linear_map_per_image_in_range() -> None:
    cfg = AugmentConfig(**{**OFF, "color": 1.0, "brightness": 0.1, "contrast": 0.2})
    images = _images(16, low=60)
    # values 60..255 times at most 1.2 plus 25.5 can clip at 255, so fit on unclipped pixels only
    out = _run(cfg, (images.float() * 0.7).round().to(torch.uint8))
    src = to_float((images.float() * 0.7).round().to(torch.uint8))
    for x, y in zip(src, out, strict=True):
        a, b = np.polyfit(x.flatten().numpy(), y.flatten().numpy(), 1)
        np.testing.assert_allclose(y.numpy(), np.clip(a * x.numpy() + b, 0, 255), atol=1e-3)
        assert 0.8 - 1e-6 <= a <= 1.2 + 1e-6 and -25.5 - 1e-4 <= b <= 25.5 + 1e-4
    assert not torch.equal(out, src)


def test_dropout_draws_one_to_four_black_rectangles() -> None:
    h, w = 40, 50
    out = _run(AugmentConfig(**{**OFF, "dropout": 1.0}), _images(32, h, w, low=1), seed=5)
    for y in out:
        dropped = (y == 0).all(0)
        assert dropped.any() and ((y == 0).any(0) == dropped).all()  # black in every channel, nowhere else
        area = int(dropped.sum())
        assert np.ceil(0.05 * h) * np.ceil(0.05 * w) <= area <= 4 * np.ceil(0.2 * h) * np.ceil(0.2 * w)
        rows, cols = dropped.any(1).nonzero().flatten(), dropped.any(0).nonzero().flatten()
        # each rectangle is at most 20% of the height and width (+1 for the ceiling), and there are at most 4
        assert len(rows) <= 4 * (np.ceil(0.2 * h) + 1) and len(cols) <= 4 * (np.ceil(0.2 * w) + 1)


def test_probabilities_are_honoured_per_image() -> None:
    images = _images(400, 16, 16, low=1)
    for key in ("affine", "blur", "dropout", "hflip"):
        out = _run(AugmentConfig(**{**OFF, key: 0.3}), images, seed=11)
        changed = (out != to_float(images)).flatten(1).any(1).float().mean().item()
        assert 0.22 < changed < 0.38, (key, changed)  # 400 draws: 0.3 +- 4 standard deviations


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    cfg = AugmentConfig(hflip=0.5, dropout=0.5)
    images = _images()
    a = BatchAugment(cfg)(to_float(images), batch_generator(42, 3, 7))
    b = BatchAugment(cfg)(to_float(images), batch_generator(42, 3, 7))
    c = BatchAugment(cfg)(to_float(images), batch_generator(42, 3, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 255


def test_augmented_batch_resembles_albumentations() -> None:
    """Both backends, same params, same images: per-pixel mean and spread of the outputs agree within a few %."""
    from whaleid.model.transforms import train_transform

    cfg = AugmentConfig(backend="albumentations")
    images = _images(256, 32, 32, seed=9)
    ours = normalize(BatchAugment(cfg)(to_float(images), batch_generator(0, 0, 0)))
    alb = train_transform(32, cfg, seed=0)
    theirs = torch.stack([alb(img.numpy()) for img in images])
    assert abs(float(ours.mean() - theirs.mean())) < 0.05
    assert abs(float(ours.std() / theirs.std()) - 1) < 0.05
    diff_ours = (ours - normalize(to_float(images))).abs().mean()
    diff_theirs = (theirs - normalize(to_float(images))).abs().mean()
    assert abs(float(diff_ours / diff_theirs) - 1) < 0.2


@pytest.mark.parametrize("seed", [0, 5])
def test_opencv_backend_applies_the_same_parameters_as_torch(seed: int) -> None:
    """Every transform on, same generator: the uint8 OpenCV path is the float path up to rounding to uint8 after
    each step (at most about one grey level on smooth images; black rectangles and flips exact)."""
    cfg = AugmentConfig(hflip=0.5, affine=0.8, color=0.7, blur=0.5, dropout=0.5)
    images = _images(48, 40, 48, seed=seed)
    want = BatchAugment(cfg)(to_float(images), batch_generator(seed, 1, 2))
    got = BatchAugment(cfg).uint8(images.clone(), batch_generator(seed, 1, 2))
    assert got.dtype == torch.uint8 and got.shape == images.shape
    diff = (to_float(got) - want).abs()
    assert float(diff.max()) <= 2.0 and float(diff.mean()) < 0.5
    d = BatchAugment(cfg).draw(48, 40, 48, batch_generator(seed, 1, 2))
    holes = 0
    for i in d.drop.nonzero().squeeze(1).tolist():
        for top, left, bottom, right in d.holes[i].to(torch.int64).tolist():
            holes += (bottom - top) * (right - left) > 0
            assert (got[i, top:bottom, left:right] == 0).all() and (want[i, :, top:bottom, left:right] == 0).all()
    assert holes > 10  # the rectangles were drawn and checked


def test_opencv_backend_hand_cases() -> None:
    """An integer shift is a copy with a reflected border; a colour change is the rounded linear map; a flip
    mirrors; the batch is changed in place."""
    images = _images(1, 16, 20, seed=2)
    gen = batch_generator(0, 0, 0)
    d = BatchAugment(AugmentConfig(**{**OFF, "affine": 1.0})).draw(1, 16, 20, gen)
    m = warp_matrices(torch.zeros(1), torch.ones(1, 2), torch.tensor([[3.0, -2.0]]), 16, 20)[0]
    assert d.affine.all()
    np.testing.assert_allclose(m, [[1, 0, -3], [0, 1, 2]], atol=1e-12)  # output (x, y) reads input (x - 3, y + 2)
    img = images[0].numpy()
    out = cv2.warpAffine(img, m, (20, 16), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    np.testing.assert_array_equal(out[:14, 3:], img[2:, :17])
    np.testing.assert_array_equal(out[:14, 2], img[2:, 0])  # reflected about the left edge: column -1 is column 0
    aug = BatchAugment(AugmentConfig(**{**OFF, "color": 1.0, "hflip": 1.0}))
    batch = images.clone()
    out = aug.uint8(batch, batch_generator(3, 0, 0))
    d = aug.draw(1, 16, 20, batch_generator(3, 0, 0))
    ref = np.clip(img[:, ::-1].astype(np.float64) * float(d.alpha[0]) + float(d.beta[0]), 0, 255)
    assert out.data_ptr() == batch.data_ptr()
    assert np.abs(out[0].numpy().astype(np.float64) - ref).max() <= 0.5 + 1e-4


def test_opencv_backend_rows_are_their_share_of_the_batch() -> None:
    """Under DDP a rank augments its rows of the global batch with the global batch's parameters."""
    cfg = AugmentConfig(hflip=0.5, dropout=0.5, blur=0.5)
    images = _images(12, 24, 24, seed=4)
    whole = BatchAugment(cfg).uint8(images.clone(), batch_generator(7, 0, 1))
    part = BatchAugment(cfg).uint8(images[4:8].clone(), batch_generator(7, 0, 1), rows=slice(4, 8), total=12)
    assert torch.equal(part, whole[4:8])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batch_equals_cpu_batch() -> None:
    cfg = AugmentConfig(hflip=0.5, dropout=0.5)
    images = _images(32)
    cpu = normalize(BatchAugment(cfg)(to_float(images), batch_generator(1, 2, 3)))
    gpu = normalize(BatchAugment(cfg)(to_float(images.cuda()), batch_generator(1, 2, 3)))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=0)


def test_draw_gives_each_parameter_its_range_and_probability() -> None:
    """4,000 rows of one draw: each switch is on for its probability's share (within 4 standard deviations), each
    value lies in its range and fills it, both blur sizes and every hole count occur, and an unused hole is empty."""
    cfg = AugmentConfig(hflip=0.3, affine=0.8, color=0.5, blur=0.1, dropout=0.6, rotate=10.0, translate=0.1)
    n, h, w = 4000, 40, 60
    d = BatchAugment(cfg).draw(n, h, w, batch_generator(1, 2, 3))
    for key, p in (("flip", 0.3), ("affine", 0.8), ("color", 0.5), ("blur", 0.1), ("drop", 0.6)):
        share = getattr(d, key).float().mean().item()
        assert abs(share - p) < 4 * (p * (1 - p) / n) ** 0.5, (key, share)
    ranges = {"angle": (-10, 10), "scale": (0.85, 1.15), "blur_sigma": (0.5, 3.0)}
    ranges |= {"shift_x": (-6, 6), "shift_y": (-4, 4)}  # translate 0.1 of 60 and 40 px
    values = {"angle": d.angle, "scale": d.scale, "blur_sigma": d.blur_sigma}
    values |= {"shift_x": d.shift[:, 0], "shift_y": d.shift[:, 1]}
    for key, (low, high) in ranges.items():
        v = values[key]
        assert low <= v.min() and v.max() < high, key
        assert v.min() < low + 0.01 * (high - low) and v.max() > high - 0.01 * (high - low), key
    off = ~d.color
    assert (d.alpha[off] == 1).all() and (d.beta[off] == 0).all()
    assert d.alpha[~off].min() >= 0.8 and d.alpha[~off].max() < 1.2 and d.beta[~off].abs().max() <= 0.2 * 255
    assert set(d.blur_size.tolist()) == {3, 5}
    top, left, bottom, right = d.holes.unbind(-1)
    used = (bottom > top).sum(1)
    assert (used[~d.drop] == 0).all() and set(used[d.drop].tolist()) == {1, 2, 3, 4}
    assert (top >= 0).all() and (bottom <= h).all() and (left >= 0).all() and (right <= w).all()
    sizes = (right - left)[bottom > top] / w
    assert sizes.min() >= 0.05 - 1 / w and sizes.max() <= 0.2 + 1 / w


@pytest.mark.parametrize("backend", ["opencv", "torch"])
def test_augmented_input_is_the_configured_backends_path(backend: str) -> None:
    cfg = AugmentConfig(backend=backend, hflip=0.5, color=0.7, blur=0.5, dropout=0.5)
    images, cpu = _images(6, 24, 32, seed=8), torch.device("cpu")
    got = BatchAugment(cfg).augmented_input(images.clone(), cpu, batch_generator(2, 0, 4))
    if backend == "opencv":
        want = model_input(BatchAugment(cfg).uint8(images.clone(), batch_generator(2, 0, 4)), cpu)
    else:
        want = normalize(BatchAugment(cfg)(to_float(images), batch_generator(2, 0, 4)))
    assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=torch.channels_last)


def _augment_in_child(queue) -> None:  # a forked child: the parent's augmentation thread is not there
    images = _images(6, 24, 24, seed=8)
    queue.put(BatchAugment(AugmentConfig(hflip=0.5, blur=0.5)).uint8(images, batch_generator(1, 0, 0)).numpy())


def test_opencv_halves_on_two_threads_equal_one_loop_and_a_forked_child() -> None:
    """uint8 splits the batch over the caller and one worker thread: the result is the whole plan applied image by
    image on one thread, for odd and even sizes, and a process forked after the thread started gets its own."""
    cfg = AugmentConfig(hflip=0.5, affine=0.8, color=0.7, blur=0.5, dropout=0.5)
    aug = BatchAugment(cfg)
    for b in (1, 2, 5, 16):
        images = _images(b, 32, 28, seed=b)
        want = images.clone().numpy()
        aug._uint8_images(want, aug._uint8_plan(aug.draw(b, 32, 28, batch_generator(2, 0, b)), 32, 28), 0)
        np.testing.assert_array_equal(aug.uint8(images.clone(), batch_generator(2, 0, b)).numpy(), want)
    ctx = torch.multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_augment_in_child, args=(queue,))
    child.start()
    got = queue.get(timeout=60)
    child.join(60)
    images = _images(6, 24, 24, seed=8)
    np.testing.assert_array_equal(
        got, BatchAugment(AugmentConfig(hflip=0.5, blur=0.5)).uint8(images, batch_generator(1, 0, 0)).numpy()
    )
