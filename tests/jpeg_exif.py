"""Test helper: JPEG files carrying an EXIF orientation tag, written by hand (no PIL needed)."""

from __future__ import annotations

import struct

import cv2
import numpy as np
from numpy.typing import NDArray


def exif_app1(orientation: int) -> bytes:
    """An APP1 segment with a one-entry IFD0: tag 0x0112 (Orientation), SHORT, the given value."""
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0))
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def jpeg_bytes(image_bgr: NDArray[np.uint8], orientation: int | None = None) -> bytes:
    """``image_bgr`` encoded as JPEG; with ``orientation``, an EXIF APP1 segment after the JFIF APP0
    one (the compressed pixels are the same bytes with or without the tag)."""
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = buf.tobytes()
    if orientation is None:
        return data
    assert data[:4] == b"\xff\xd8\xff\xe0"
    end_app0 = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:end_app0] + exif_app1(orientation) + data[end_app0:]


def asymmetric_image(height: int = 24, width: int = 40) -> NDArray[np.uint8]:
    """A BGR image whose every rotation and mirror differs (colour blocks in three corners)."""
    img = np.full((height, width, 3), 90, np.uint8)
    img[: height // 3, : width // 4] = (0, 0, 250)
    img[: height // 3, -width // 4:] = (0, 250, 0)
    img[-height // 3:, : width // 4] = (250, 0, 0)
    return img
