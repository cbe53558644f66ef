"""Small OpenCV image helpers for the DOTA tools: non-ASCII paths, clear errors, atomic writes.

``cv2.imread`` / ``cv2.imwrite`` fail silently on non-ASCII paths on some systems (they return
``None`` / ``False``); these helpers go through ``np.fromfile`` + ``cv2.imdecode`` and
``cv2.imencode`` + ``ndarray.tofile`` instead. Images stay in OpenCV's **BGR** order: the split
tool only crops and pads them, it never looks at colours.

**EXIF orientation is ignored by every reader of the project**: labels are made on the pixels as
stored in the file (annotation tools such as roLabelImg show the stored pixels, and DOTA's images
carry no orientation tag), so a phone or drone JPEG tagged "rotate 90" is read unrotated, the same
way by the split tool, training, testing and the pictures. Every decode goes through
:func:`decode_image_file`, which enforces this.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from .atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "decode_image_file",
    "read_image_bgr",
    "write_image_atomic",
    "list_images",
    "index_images",
]

#: File suffixes (lower case) treated as images when listing a folder.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class ImageReadError(OSError):
    """An image file could not be read or decoded; the message names the file."""


def decode_image_file(path: str | Path, flags: int) -> NDArray[np.generic]:
    """Read a file's bytes and decode them with ``cv2.imdecode(data, flags)`` (non-ASCII safe),
    the EXIF orientation ignored (module docstring): ``IMREAD_IGNORE_ORIENTATION`` is added to any
    ``flags`` that would apply it (``IMREAD_UNCHANGED`` never does).

    Raises:
        ImageReadError: missing, empty, truncated or undecodable file; the message names it.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e})") from e
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file")
    if flags >= 0:
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(data, flags)
    if img is None or img.size == 0:
        raise ImageReadError(f"{path}: cannot decode image (corrupt, truncated or unknown format)")
    return img


def read_image_bgr(path: str | Path) -> NDArray[np.uint8]:
    """Decode an image file as ``(H, W, 3)`` uint8 BGR (``cv2.IMREAD_COLOR``, as DOTA's ImgSplit, but
    the EXIF orientation ignored: the pixels as stored, which the labels refer to).

    Grayscale images are replicated to 3 channels, alpha is dropped, 16-bit images are scaled to
    8 bits by OpenCV.

    Raises:
        ImageReadError: missing, empty, truncated or undecodable file.
    """
    return np.ascontiguousarray(decode_image_file(path, cv2.IMREAD_COLOR))


def write_image_atomic(path: str | Path, image: NDArray[np.uint8]) -> None:
    """Encode ``image`` (``(H, W)`` or ``(H, W, 3)`` uint8, BGR) by the path's suffix and write it
    atomically (:func:`DOTA_devkit.atomic.atomic_path`)."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    with atomic_path(path) as tmp:
        buf.tofile(tmp)


def list_images(folder: str | Path) -> dict[str, Path]:
    """``{image id: path}`` of the images in ``folder`` (not recursive; suffixes in
    :data:`IMAGE_EXTENSIONS`, any case; hidden files skipped), sorted by id (the file stem).

    The one listing rule of the project (split tool, data sets, inference, split files, pictures).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: two files share a stem (e.g. ``P0001.png`` and ``P0001.jpg``): the image id is
            ambiguous (labels are matched by id); the message names both files.
    """
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    out: dict[str, Path] = {}
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith("."):
            continue
        if p.stem in out:
            raise ValueError(f"{folder}: two images with the id {p.stem!r}: {out[p.stem].name} and {p.name}")
        out[p.stem] = p
    return out


def index_images(image_dir: str | Path | None) -> dict[str, Path]:
    """``{stem: path}`` of the image files in a folder, for the format converters' look-up of the
    image an annotation file names (which may carry its own file name to tell two files apart).

    Data set readers use :func:`list_images` (two files with one stem are an error there). Here
    they are tolerated: the first suffix in :data:`IMAGE_EXTENSIONS` order wins, and the clash is
    logged. Empty when the folder does not exist."""
    if image_dir is None or not Path(image_dir).is_dir():
        return {}
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    found: dict[str, Path] = {}
    clashes: list[str] = []
    for entry in sorted(os.scandir(image_dir), key=lambda e: e.name):
        stem, suffix = os.path.splitext(entry.name)
        if suffix.lower() not in rank or not entry.is_file():
            continue
        if stem in found:
            clashes.append(stem)
        if stem not in found or rank[suffix.lower()] < rank[found[stem].suffix.lower()]:
            found[stem] = Path(entry.path)
    if clashes:
        logger.warning("%s: %d image id(s) have several files (e.g. %s); using the %s order",
                       image_dir, len(clashes), clashes[0], "/".join(IMAGE_EXTENSIONS))
    return found
