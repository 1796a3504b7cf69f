"""Batched training augmentation: a batch's random parameters drawn at once, applied with OpenCV to the uint8 CPU
batch or in torch on the training device.

Per-image augmentation in the DataLoader (``augment.backend: albumentations``) costs more CPU per image than a
small model's training step. With the two batched backends the loader only decodes, and :class:`BatchAugment`
applies to a uint8 batch, each image with its own random parameters, in this order:

* horizontal flip (``hflip``);
* affine (``affine``): rotation in ±``rotate`` degrees, scale in [``scale_min``, ``scale_max``] for x and y apart
  (the aspect ratio jitters too), shift in ±``translate`` of the size, about the centre, bilinear, reflected border;
* brightness/contrast (``color``): ``x * (1 + c) + 255 * b``, ``c`` in ±``contrast``, ``b`` in ±``brightness``,
  clipped to [0, 255];
* Gaussian blur (``blur``): a 3 or 5 pixel kernel with sigma in [0.5, 3], reflected border;
* coarse dropout (``dropout``): 1-4 black rectangles, each 5-20% of the height and width.

Then :func:`normalize` (ImageNet mean and std). ``opencv`` (the default) applies them to the uint8 CPU batch before
it moves (:meth:`BatchAugment.uint8`, each step rounded to uint8); ``torch`` in float after it moves (nearly free
on a GPU). A batch's parameters come from a CPU generator seeded by (seed, epoch, step) (:func:`batch_generator`):
the same for any device, worker count or resume point. Their ranges are the albumentations pipeline's
(``whaleid.model.transforms``), so the backends agree up to rounding and border details.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from whaleid.config import AugmentConfig

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MAX_HOLES = 4  # coarse dropout: 1 to MAX_HOLES rectangles
HOLE_SIZE = (0.05, 0.2)  # each rectangle's height and width, as a share of the image's
_WARP = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP


@functools.lru_cache(maxsize=1)
def _second_thread(pid: int) -> concurrent.futures.ThreadPoolExecutor:
    """The one worker thread that augments half of each batch, per process (a forked child gets its own)."""
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="whaleid-augment")


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, step)."""
    state = np.random.SeedSequence([seed, epoch, step]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) with values in [0, 255], on the same device."""
    return images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)


def _mean_inv_std(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(3,) each: the ImageNet mean x 255 and 1 / (std x 255), for values in [0, 255]."""
    mean = torch.tensor(MEAN, device=device, dtype=dtype) * 255.0
    return mean, 1.0 / (torch.tensor(STD, device=device, dtype=dtype) * 255.0)


def normalize(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 255] -> ImageNet-normalised, as albumentations' ``Normalize`` does; ``inplace``
    overwrites ``x`` instead of allocating another batch-sized tensor."""
    mean, inv_std = (t.view(1, 3, 1, 1) for t in _mean_inv_std(x.device, x.dtype))
    return x.sub_(mean).mul_(inv_std) if inplace else (x - mean) * inv_std


@functools.lru_cache(maxsize=8)
def _pixel_rows(pixels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``normalize``'s mean and inverse std repeated for ``pixels`` RGB pixels: (pixels * 3,) each."""
    mean, inv_std = _mean_inv_std(device, torch.float32)
    return mean.repeat(pixels), inv_std.repeat(pixels)


def model_input(
    images: torch.Tensor, device: torch.device, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """A batch from the loader -> the model's input on ``device``: uint8 (B, H, W, 3) is moved, converted,
    passed through ``augment`` (float (B, 3, H, W) in [0, 255] -> the same) when given, and normalised there; a
    float batch (already augmented and normalised by albumentations) is only moved. Either comes out channels_last."""
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8 and augment is None:
        # (B, H, W, 3) bytes cast in place of their layout and normalised as (B, H * W * 3) rows against a row of
        # repeated means: the same values as `normalize`, 6x faster than broadcasting over a last dimension of 3.
        # Seen as (B, 3, H, W) they are channels_last already.
        x = images.to(torch.float32)
        mean, inv_std = _pixel_rows(x.shape[1] * x.shape[2], x.device)
        x.view(len(x), -1).sub_(mean).mul_(inv_std)
        return x.permute(0, 3, 1, 2)
    if images.dtype == torch.uint8:
        images = normalize(augment(to_float(images)), inplace=True)
    return images.contiguous(memory_format=torch.channels_last)  # as the models are kept (train, embed)


@functools.lru_cache(maxsize=8)
def _base_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(1, height * width, 3) rows (x, y, 1) of ``F.affine_grid``'s identity grid."""
    xy = F.affine_grid(torch.eye(2, 3, device=device)[None], [1, 1, height, width], align_corners=False)
    return torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1).view(1, height * width, 3)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, height, width), align_corners=False)``, base grid built once per size, each
    coordinate ``(x * t0 + y * t1) + t2`` summed elementwise in torch's order (the same bits on AVX2, the last may
    differ on AVX-512): about 4x faster than ``F.affine_grid`` for 26 x 96 x 96 on 2 CPU cores."""
    base = _base_grid(height, width, theta.device).to(theta.dtype)[0].view(height, width, 3)  # x, y, 1
    x, y = base[None, 0, :, 0], base[None, :, 0, 1]  # x varies along a row, y down a column: (1, W), (1, H)
    planes = []
    for r in range(2):  # products once per column and row, summed over (H, W); contiguous planes, stacked at the end
        xt, yt = x * theta[:, r, 0, None], y * theta[:, r, 1, None]
        planes.append(torch.add(xt[:, None, :], yt[:, :, None]).add_(theta[:, r, 2, None, None]))
    return torch.stack(planes, dim=-1)


def _pixel_inverse(angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B, 2, 2) float64 pixel-space inverse S^-1 R^-1 of the forward map's linear part, where
    R = [[cos, sin], [-sin, cos]] rotates counter-clockwise with y down and ``S = diag(scale)``."""
    rad = torch.deg2rad(angle.double())
    cos, sin = torch.cos(rad), torch.sin(rad)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2) / scale.double()[:, :, None]


def affine_theta(
    angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """(B, 2, 3) matrices for ``F.affine_grid`` (output -> input, normalised coordinates) of the forward map
    ``p_out = R(angle) S (p_in - centre) + centre + shift``, in pixels: ``angle`` (B,) in degrees
    (counter-clockwise on screen, as OpenCV), ``S = diag(scale)`` with ``scale`` (B, 2) for x and y, ``shift``
    (B, 2) in pixels (x, y)."""
    inv = _pixel_inverse(angle, scale)
    to_norm = torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64)
    linear = inv * to_norm[None, :, None] / to_norm[None, None, :]
    offset = -(linear @ (shift.double() * to_norm)[:, :, None])
    return torch.cat([linear, offset], dim=2).float()


BLUR_SIGMA = (0.5, 3.0)  # albumentations' GaussianBlur default
BLUR_SIZES = (3, 5)


def gaussian_kernels(sigma: torch.Tensor, size: torch.Tensor, taps: int = max(BLUR_SIZES)) -> torch.Tensor:
    """(B, taps) normalised 1-D Gaussians, each ``size[i]`` taps wide (odd, <= ``taps``) with ``sigma[i]``,
    centred and zero-padded to ``taps``: ``cv2.getGaussianKernel(size, sigma)`` in the middle."""
    x = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    k = torch.exp(-(x[None] ** 2) / (2 * sigma.double()[:, None] ** 2))
    k = k * (x[None].abs() <= (size[:, None] - 1) / 2)
    return (k / k.sum(1, keepdim=True)).float()


def gaussian_blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Separable blur of each image of (B, C, H, W) with its own 1-D kernel (B, taps) in both directions, and a
    reflected border (OpenCV's default ``BORDER_REFLECT_101``)."""
    taps = kernels.shape[1]
    pad = taps // 2
    h, w = x.shape[-2:]
    k = kernels.to(x.device, x.dtype)[:, :, None, None, None]  # (B, taps, 1, 1, 1)
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = sum(k[:, i] * x[..., i : i + h, :] for i in range(taps))
    return sum(k[:, i] * rows[..., i : i + w] for i in range(taps))


def warp_matrices(angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(B, 2, 3) float64 maps output pixel -> input pixel for ``cv2.warpAffine(..., flags=WARP_INVERSE_MAP)``: the
    forward map of :func:`affine_theta` in pixel-centre coordinates, ``p_in = S^-1 R^-1 (p_out - c - shift) + c``
    with ``c`` the image centre ((width - 1) / 2, (height - 1) / 2)."""
    inv = _pixel_inverse(angle, scale)
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64)
    offset = centre[None] - (inv @ (centre[None] + shift.double())[:, :, None])[..., 0]
    return torch.cat([inv, offset[:, :, None]], dim=2).numpy()


@dataclass(frozen=True)
class Draw:
    """One batch's random parameters (``n`` = the rows augmented here), drawn by :meth:`BatchAugment.draw`."""

    flip: torch.Tensor  # (n,) bool
    affine: torch.Tensor  # (n,) bool
    angle: torch.Tensor  # (n,) degrees
    scale: torch.Tensor  # (n, 2) x, y
    shift: torch.Tensor  # (n, 2) pixels x, y
    color: torch.Tensor  # (n,) bool
    alpha: torch.Tensor  # (n,) contrast factor 1 + c (1 where color is off)
    beta: torch.Tensor  # (n,) brightness offset 255 * b (0 where color is off)
    blur: torch.Tensor  # (n,) bool
    blur_size: torch.Tensor  # (n,) odd taps
    blur_sigma: torch.Tensor  # (n,)
    drop: torch.Tensor  # (n,) bool
    holes: torch.Tensor  # (n, MAX_HOLES, 4) float top, left, bottom, right (an unused hole is empty: bottom = top)


class BatchAugment:
    """The ``augment`` params applied to a batch (module doc): :meth:`__call__` in torch on a float (B, 3, H, W)
    batch in [0, 255] on any device, :meth:`uint8` with OpenCV on the loader's uint8 (B, H, W, 3) CPU batch, both
    with the same random parameters (:meth:`draw`); :meth:`augmented_input` picks the configured one. Every call
    draws as many random values from ``generator`` whatever the probabilities: a batch's augmentation is a pure
    function of its seed. With ``rows`` and ``total``, the batch is those rows of a batch of ``total`` images (one
    rank's share under DDP): parameters are drawn for the whole batch and each row gets its own, as in one process."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def draw(
        self, b: int, h: int, w: int, generator: torch.Generator, rows: slice | None = None, total: int | None = None
    ) -> Draw:
        """Every parameter of a batch of ``b`` images of ``h`` x ``w``, drawn in a fixed order."""
        cfg = self.cfg
        n, rows = (b, slice(None)) if rows is None else (total, rows)

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return (low + (high - low) * torch.rand(n, *shape, generator=generator))[rows]

        flip = uniform(0, 1) < cfg.hflip
        do_affine = uniform(0, 1) < cfg.affine
        angle = uniform(-cfg.rotate, cfg.rotate)
        scale = uniform(cfg.scale_min, cfg.scale_max, 2)
        shift = uniform(-cfg.translate, cfg.translate, 2) * torch.tensor([w, h], dtype=torch.float32)
        do_color = uniform(0, 1) < cfg.color
        contrast = uniform(-cfg.contrast, cfg.contrast)
        brightness = uniform(-cfg.brightness, cfg.brightness)
        do_blur = uniform(0, 1) < cfg.blur
        blur_size = torch.tensor(BLUR_SIZES)[torch.randint(len(BLUR_SIZES), (n,), generator=generator)[rows]]
        blur_sigma = uniform(*BLUR_SIGMA)
        do_drop = uniform(0, 1) < cfg.dropout
        holes = torch.randint(1, MAX_HOLES + 1, (n,), generator=generator)[rows]
        hole_size = uniform(*HOLE_SIZE, MAX_HOLES, 2) * torch.tensor([h, w], dtype=torch.float32)
        hole_pos = uniform(0, 1, MAX_HOLES, 2)

        top = (hole_pos[..., 0] * (h - hole_size[..., 0])).floor()
        left = (hole_pos[..., 1] * (w - hole_size[..., 1])).floor()
        active = do_drop[:, None] & (torch.arange(MAX_HOLES)[None, :] < holes[:, None])
        bottom = torch.where(active, top + hole_size[..., 0].ceil(), top)
        right = left + hole_size[..., 1].ceil()
        return Draw(
            flip=flip,
            affine=do_affine,
            angle=angle,
            scale=scale,
            shift=shift,
            color=do_color,
            alpha=torch.where(do_color, 1.0 + contrast, torch.ones(len(do_color))),
            beta=torch.where(do_color, 255.0 * brightness, torch.zeros(len(do_color))),
            blur=do_blur & (min(h, w) > max(BLUR_SIZES) // 2),
            blur_size=blur_size,
            blur_sigma=blur_sigma,
            drop=do_drop,
            holes=torch.stack([top, left, bottom, right], dim=-1),
        )

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, rows: slice | None = None, total: int | None = None
    ) -> torch.Tensor:
        """Augment float ``x`` (modified in place where possible; use the returned tensor)."""
        b, _, h, w = x.shape
        d = self.draw(b, h, w, generator, rows, total)
        dev = x.device
        if d.flip.any():
            x = torch.where(d.flip.to(dev).view(b, 1, 1, 1), x.flip(-1), x)
        if d.affine.any():
            idx = d.affine.nonzero().squeeze(1)
            theta = affine_theta(d.angle[idx], d.scale[idx], d.shift[idx], h, w).to(dev)
            grid = affine_grid(theta, h, w)
            warped = F.grid_sample(x[idx.to(dev)], grid, "bilinear", "reflection", align_corners=False)
            x.index_copy_(0, idx.to(dev), warped)
        if d.color.any():
            x.mul_(d.alpha.to(dev).view(b, 1, 1, 1)).add_(d.beta.to(dev).view(b, 1, 1, 1)).clamp_(0.0, 255.0)
        if d.blur.any():
            idx = d.blur.nonzero().squeeze(1)
            kernels = gaussian_kernels(d.blur_sigma[idx], d.blur_size[idx])
            x.index_copy_(0, idx.to(dev), gaussian_blur(x[idx.to(dev)], kernels))
        if d.drop.any():
            top, left, bottom, right = d.holes.unbind(-1)
            ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
            xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
            inside = (ys >= top[..., None, None]) & (ys < bottom[..., None, None])
            inside = inside & (xs >= left[..., None, None]) & (xs < right[..., None, None])
            x.masked_fill_(inside.any(1).to(dev)[:, None], 0.0)  # (B, 1, H, W)
        return x

    def augmented_input(
        self,
        images: torch.Tensor,
        device: torch.device,
        generator: torch.Generator,
        rows: slice | None = None,
        total: int | None = None,
    ) -> torch.Tensor:
        """The loader's uint8 (B, H, W, 3) batch ``images`` augmented by the configured backend, as the model's input
        on ``device`` (:func:`model_input`): opencv changes ``images`` in place first, torch augments it moved."""
        if self.cfg.backend == "opencv":
            return model_input(self.uint8(images, generator, rows, total), device)
        return model_input(images, device, functools.partial(self, generator=generator, rows=rows, total=total))

    def uint8(
        self, images: torch.Tensor, generator: torch.Generator, rows: slice | None = None, total: int | None = None
    ) -> torch.Tensor:
        """Augment the uint8 (B, H, W, 3) CPU batch ``images`` in place with OpenCV, image by image, and return it:
        the same parameters as :meth:`__call__`, each step rounded to uint8 (bilinear warp with a reflected border,
        brightness/contrast through a 256-entry table, OpenCV's Gaussian blur, black rectangles), half the batch on a
        second thread; on 2 CPU cores cheaper than the float path (docs/benchmarks.md)."""
        arr, half = images.numpy(), len(images) // 2
        plan = self._uint8_plan(self.draw(*images.shape[:3], generator, rows, total), *arr.shape[1:3])
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # one each: a second OpenCV thread fights torch's spinning pool (the same output)
        try:  # the halves on two threads (OpenCV releases the GIL): bench/train_loop 1.00 of bare, 0.91 on one
            second = _second_thread(os.getpid()).submit(self._uint8_images, arr, plan[half:], half)
            self._uint8_images(arr, plan[:half], 0)
            second.result()
        finally:
            cv2.setNumThreads(threads)
        return images

    @staticmethod
    def _uint8_plan(d: Draw, h: int, w: int) -> list[tuple]:
        """Per image (inverse warp map, flip, colour table, (blur taps, sigma), holes), None where a step is off."""
        idx = d.affine.nonzero().squeeze(1).tolist()
        maps = dict(zip(idx, warp_matrices(d.angle[idx], d.scale[idx], d.shift[idx], h, w) if idx else [], strict=True))
        alpha, beta = d.alpha.numpy()[:, None], d.beta.numpy()[:, None]  # float32, as each table is computed
        luts = np.clip(np.arange(256, dtype=np.float32) * alpha + beta, 0, 255).round().astype(np.uint8)
        holes, sizes, sigmas = d.holes.to(torch.int64).tolist(), d.blur_size.tolist(), d.blur_sigma.tolist()
        flags, plan = zip(*(t.tolist() for t in (d.flip, d.color, d.blur, d.drop)), strict=True), []
        for i, (flip, color, blur, drop) in enumerate(flags):
            m = maps.get(i)
            if m is not None and flip:  # x_in -> w - 1 - x_in
                m, flip = np.array([-m[0], m[1]]) + [[0, 0, w - 1], [0, 0, 0]], False
            blurred = (sizes[i], sigmas[i]) if blur else None
            plan.append((m, flip, luts[i] if color else None, blurred, holes[i] if drop else None))
        return plan

    @staticmethod
    def _uint8_images(arr: np.ndarray, plan: list[tuple], start: int) -> None:
        """:meth:`uint8`'s OpenCV work: ``plan`` (:meth:`_uint8_plan`) applied to ``arr`` from image ``start``."""
        h, w = arr.shape[1:3]
        for img, (m, flip, lut, blur, holes) in zip(arr[start:], plan, strict=False):
            if m is not None:  # out of place (warpAffine reads pixels it has written otherwise), then copied back
                img[:] = cv2.warpAffine(img, m, (w, h), flags=_WARP, borderMode=cv2.BORDER_REFLECT)
            elif flip:
                img[:] = cv2.flip(img, 1)  # 10x numpy's reversed-stride copy
            if lut is not None:
                cv2.LUT(img, lut, dst=img)
            if blur is not None:
                img[:] = cv2.GaussianBlur(img, (blur[0], blur[0]), blur[1], borderType=cv2.BORDER_REFLECT_101)
            for top, left, bottom, right in holes or ():
                img[top:bottom, left:right] = 0
