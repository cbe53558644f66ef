"""Robust image reading: any common file becomes one ``(H, W, 3)`` uint8 RGB array, or a clear error.

Every image is decoded **once** (``cv2.imdecode`` on the file's bytes, so non-ASCII paths work on
every OS) with ``IMREAD_UNCHANGED`` and converted to RGB once. Conversions, all documented here
because they change pixel values:

* 8-bit colour (BGR): channel order reversed to RGB.
* grayscale ``(H, W)`` or ``(H, W, 1)``: replicated to 3 channels.
* 2 channels (grayscale + alpha): the gray channel replicated, alpha dropped.
* 4 channels (BGRA): alpha dropped (not composited: aerial tiles use alpha for no-data, which
  keeps its underlying colour, usually black).
* 16-bit: divided by 257 (65535 -> 255, a full-range linear map; no per-image stretch, so that
  all images of a data set keep the same scale).
* floating point: values in ``[0, 1]`` scaled by 255, others clipped to ``[0, 255]``.

EXIF orientation is ignored (``IMREAD_UNCHANGED``; :func:`DOTA_devkit.image_io.decode_image_file`
enforces it for any flags): labels refer to the pixels as stored, the same rule as the split tool's
reader :func:`DOTA_devkit.image_io.read_image_bgr`.

An unreadable, truncated or empty file raises :class:`ImageReadError` naming the file; callers
(e.g. :class:`bbavectors.data.dataset.DotaDataset`) log it and skip the image.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

# One definition for the whole project (the DOTA tools list and read images too).
from DOTA_devkit.image_io import IMAGE_EXTENSIONS, ImageReadError, decode_image_file

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "read_image", "to_rgb_uint8", "write_image"]


def to_rgb_uint8(decoded: NDArray[np.generic], source: str = "<image>") -> NDArray[np.uint8]:
    """Convert an OpenCV-decoded array (BGR channel order) to ``(H, W, 3)`` uint8 RGB.

    Args:
        decoded: ``(H, W)``, ``(H, W, 1..4)`` of uint8, uint16, float32/64 (see the module docstring).
        source: shown in error messages.
    Returns:
        a C-contiguous ``(H, W, 3)`` uint8 RGB array.
    """
    img = decoded
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or img.size == 0 or min(img.shape[:2]) == 0:
        raise ImageReadError(f"{source}: empty or malformed image array of shape {img.shape}")
    img = _to_uint8(img, source)
    if img.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_GRAY2RGB))
    channels = img.shape[2]
    if channels == 2:
        return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2RGB))
    if channels == 3:
        return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if channels == 4:
        return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGRA2RGB))
    raise ImageReadError(f"{source}: unsupported number of channels {channels}")


def _to_uint8(img: NDArray[np.generic], source: str) -> NDArray[np.uint8]:
    if img.dtype == np.uint8:
        return img  # type: ignore[return-value]
    if img.dtype == np.uint16:
        # Rounded division keeps 257 * k -> k exactly.
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        f = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if f.size and float(f.max()) <= 1.0:
            f = f * 255.0
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)
    if np.issubdtype(img.dtype, np.integer):
        return np.clip(img, 0, 255).astype(np.uint8)
    raise ImageReadError(f"{source}: unsupported pixel type {img.dtype}")


def read_image(path: str | Path) -> NDArray[np.uint8]:
    """Decode an image file into ``(H, W, 3)`` uint8 RGB (conversions in the module docstring).

    Raises:
        ImageReadError: the file is missing, empty or cannot be decoded; the message names it.
    """
    return to_rgb_uint8(decode_image_file(path, cv2.IMREAD_UNCHANGED), str(path))


def write_image(path: str | Path, image_rgb: NDArray[np.uint8]) -> None:
    """Encode ``(H, W, 3)`` uint8 RGB by the path's suffix and write it atomically."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    buf.tofile(tmp)
    tmp.replace(path)
