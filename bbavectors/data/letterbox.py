"""Letterbox geometry shared by training, testing and export: one geometry (docs/design.md "Known
flaws" item 6).

An image of ``h x w`` is resized by ``scale = min(S / h, S / w)`` (aspect kept) and placed at the
**top-left** of an ``S x S`` canvas; the rest is padding. A point maps as
``x' = x * scale + pad_x`` (``pad_x = pad_y = 0`` for this placement; kept explicit so that other
placements and augmentation crops share the same inverse). The parameters travel with each
sample as a ``(3,)`` tensor ``[scale, pad_x, pad_y]`` and decoding inverts them.

Normalisation happens on the device, on a batch of uint8 RGB images
(:func:`normalize_images`), so that data workers only decode and augment.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

__all__ = ["LetterboxParams", "letterbox_params", "letterbox_image", "normalize_images"]


@dataclass(frozen=True)
class LetterboxParams:
    """``x' = x * scale + pad_x``, ``y' = y * scale + pad_y``."""

    scale: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    def apply(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Original -> network coordinates; ``points`` ``(..., 2k)`` interleaved x, y."""
        p = np.asarray(points, dtype=np.float64).copy()
        p[..., 0::2] = p[..., 0::2] * self.scale + self.pad_x
        p[..., 1::2] = p[..., 1::2] * self.scale + self.pad_y
        return p

    def invert(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Network -> original coordinates; ``points`` ``(..., 2k)`` interleaved x, y."""
        p = np.asarray(points, dtype=np.float64).copy()
        p[..., 0::2] = (p[..., 0::2] - self.pad_x) / self.scale
        p[..., 1::2] = (p[..., 1::2] - self.pad_y) / self.scale
        return p

    def as_tensor(self) -> Tensor:
        """``(3,)`` float32 ``[scale, pad_x, pad_y]``."""
        return torch.tensor([self.scale, self.pad_x, self.pad_y], dtype=torch.float32)


def letterbox_params(height: int, width: int, size: int) -> LetterboxParams:
    """Parameters that fit an ``height x width`` image into ``size x size``."""
    if height <= 0 or width <= 0:
        raise ValueError(f"empty image ({height}x{width})")
    return LetterboxParams(scale=min(size / height, size / width))


def letterbox_image(
    image: NDArray[np.uint8], size: int, pad_value: int = 0
) -> tuple[NDArray[np.uint8], LetterboxParams]:
    """Resize ``(H, W, 3)`` uint8 into a ``(size, size, 3)`` canvas at the top-left.

    Returns:
        the canvas and its :class:`LetterboxParams`.
    """
    h, w = image.shape[:2]
    params = letterbox_params(h, w, size)
    nw = max(1, min(size, round(w * params.scale)))
    nh = max(1, min(size, round(h * params.scale)))
    interp = cv2.INTER_AREA if params.scale < 1 else cv2.INTER_LINEAR
    resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=interp)
    canvas = np.full((size, size, image.shape[2]), pad_value, dtype=np.uint8)
    canvas[:nh, :nw] = resized
    # The exact per-axis scale after rounding, so the inverse maps borders to borders.
    return canvas, LetterboxParams(scale=params.scale)


def normalize_images(
    images: Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> Tensor:
    """uint8 RGB ``(B, 3, H, W)`` -> float ``(B, 3, H, W)``: ``(x / 255 - mean) / std``.

    Runs on the images' device; keeps a channels_last memory format if the input has it.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    m = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return (images.float() - m) / s
