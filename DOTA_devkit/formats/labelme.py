"""LabelMe JSON -> :class:`~DOTA_devkit.labels.LabelFile`.

LabelMe (https://github.com/wkentaro/labelme, JSON written by ``labelme/label_file.py``) saves one
JSON per image::

    {"version": "5.4.1", "flags": {}, "imagePath": "a.jpg", "imageData": null,
     "imageHeight": 480, "imageWidth": 640,
     "shapes": [{"label": "car", "points": [[x1, y1], [x2, y2], [x3, y3], [x4, y4]],
                 "group_id": null, "description": "", "shape_type": "polygon", "flags": {}}]}

Read: ``polygon`` shapes of exactly 4 points, corners in the drawn order, pixels (LabelMe's
coordinates are image pixels, ``x`` right, ``y`` down: no angle to convert). A ``rectangle``
(2 opposite corners, axis-aligned) becomes TL, TR, BR, BL. Everything else is reported and skipped:
``rotation`` shapes (a fork's rotated rectangle, whose point order the fork does not document),
``circle``, ``line``, ``linestrip``, ``point``, ``mask``, polygons of other than 4 points.
``flags: {"difficult": true}`` on a shape sets the difficult flag. ``imagePath`` is relative to the
JSON; ``imageWidth`` / ``imageHeight`` are the declared size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..image_io import index_images
from ..labels import LabelFile, LabelReport
from .common import ConversionReport, ReadOptions, Sample, SourceData, find_image, record_malformed
from .xml_io import FieldError, accept_object, record_issue

__all__ = ["LabelMeAnnotation", "JsonError", "read_labelme_json", "read_labelme_folder"]


class JsonError(ValueError):
    """A JSON file that cannot be read or is not a LabelMe annotation; the message names it."""


@dataclass
class LabelMeAnnotation:
    labels: LabelFile
    image_path: str | None
    size: tuple[int, int] | None  # (width, height) declared


def _points(shape: dict[str, Any]) -> NDArray[np.float64]:
    pts = shape.get("points")
    try:
        arr = np.asarray(pts, dtype=np.float64)
    except (TypeError, ValueError):
        raise FieldError("malformed", "points are not numbers") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise FieldError("malformed", "points must be a list of [x, y]")
    if not np.isfinite(arr).all():
        raise FieldError("non-finite", "NaN or inf in points")
    return arr


def _polygon(shape: dict[str, Any]) -> NDArray[np.float64]:
    kind = shape.get("shape_type") or "polygon"
    if kind == "polygon":
        pts = _points(shape)
        if len(pts) != 4:
            raise FieldError(
                "not-4-points", f"polygon of {len(pts)} points (only 4-point polygons are boxes)"
            )
        return pts.reshape(8)
    if kind == "rectangle":
        pts = _points(shape)
        if len(pts) != 2:
            raise FieldError("malformed", f"rectangle of {len(pts)} points (expected 2)")
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        return np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)
    raise FieldError(
        "unsupported-shape", f"shape_type {kind!r} is not read (polygon of 4 points or rectangle)"
    )


def read_labelme_json(
    path: str | Path,
    classes: Sequence[str] | None = None,
    strict: bool = False,
    report: LabelReport | None = None,
) -> LabelMeAnnotation:
    """Read one LabelMe JSON (module docstring).

    Args:
        classes: when given, other labels are ``unknown-class`` (skipped).
    Returns:
        the annotation; ``labels.polygons()`` is ``(N, 8)`` pixels. Shapes are numbered from 1 in
        messages (LabelMe JSON has no useful line numbers: the object index is the locator).
    Raises:
        JsonError: unreadable or malformed JSON, or no ``shapes`` list.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise JsonError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise JsonError(f"{path}: not a LabelMe annotation (no 'shapes' list)")
    report = report if report is not None else LabelReport()
    report.files += 1
    known = set(classes) if classes is not None else None
    size = None
    w, h = data.get("imageWidth"), data.get("imageHeight")
    if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0:
        size = (int(w), int(h))
    image_path = data.get("imagePath") if isinstance(data.get("imagePath"), str) else None
    out = LabelMeAnnotation(LabelFile(), image_path, size)
    for index, shape in enumerate(data["shapes"], 1):
        try:
            if not isinstance(shape, dict):
                raise FieldError("malformed", "a shape must be an object")
            name = shape.get("label")
            if not isinstance(name, str) or not name.strip():
                raise FieldError("missing-field", "no label")
            name = name.strip()
            if any(c.isspace() for c in name):
                raise FieldError("bad-class-name", f"label {name!r} contains whitespace (use '-')")
            polygon = _polygon(shape)
            flags = shape.get("flags") or {}
            difficult = 1 if isinstance(flags, dict) and flags.get("difficult") is True else 0
        except FieldError as e:
            label = shape.get("label") if isinstance(shape, dict) else None
            record_issue(
                report,
                strict,
                path,
                0,
                e.kind,
                f"object {index}" + (f" ({label})" if isinstance(label, str) else "") + f": {e}",
            )
            continue
        accept_object(out.labels, report, strict, path, 0, index, polygon, name, difficult, known)
    return out


def read_labelme_folder(src: Path, options: ReadOptions, report: ConversionReport) -> SourceData:
    """Every ``*.json`` of ``src``; the image is ``imagePath`` relative to the JSON (or, with
    ``options.image_dir``, found there by name); ``imageWidth`` / ``imageHeight`` the declared size."""
    if not src.is_dir():
        raise FileNotFoundError(f"folder not found: {src}")
    files = sorted(p for p in src.iterdir() if p.suffix.lower() == ".json" and p.is_file())
    if not files:
        raise FileNotFoundError(f"no .json files in {src}")
    index = index_images(options.image_dir or src)
    out = SourceData()
    for path in files:
        try:
            ann = read_labelme_json(path, options.classes, options.strict, report.labels)
        except JsonError as e:
            record_malformed(report, options.strict, path, e, "malformed-json")
            continue
        image = None
        if ann.image_path and options.image_dir is None:
            beside = path.parent / ann.image_path.replace("\\", "/")
            image = beside if beside.is_file() else None
        if image is None:
            image = find_image(index, path.stem, ann.image_path)
        out.samples.append(Sample(path.stem, ann.labels, path, image, ann.size))
    return out
