"""Prediction pictures: polygons in class colours with scores, beside the ground truth.

The drawing itself is :mod:`bbavectors.drawing` (one exact colour per class, labels, legend); this
module composes the pictures that training writes to ``<run>/predictions/<image_id>.png`` and to
TensorBoard: ground truth on the left, predictions on the right, each panel titled. All images are
``(H, W, 3)`` uint8 **RGB**. A picture is at most ``max_side`` (default
:data:`~bbavectors.drawing.MAX_PICTURE_SIDE`, 1600) px wide and high: each panel is downsized
before anything is drawn or concatenated, so a 20000 x 20000 validation image costs a few MB here,
not gigabytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from DOTA_devkit.labels import LabelFile

from ..data.image_io import write_image
from ..drawing import MAX_PICTURE_SIDE, draw_detections, draw_label_file, fit_picture

__all__ = ["prediction_picture", "side_by_side", "save_picture", "PANEL_GAP"]

#: White pixels between the panels of a side-by-side picture.
PANEL_GAP = 6
_TITLE_HEIGHT = 22


def _titled(image: NDArray[np.uint8], title: str) -> NDArray[np.uint8]:
    bar = np.full((_TITLE_HEIGHT, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (4, _TITLE_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def side_by_side(panels: Sequence[NDArray[np.uint8]], titles: Sequence[str]) -> NDArray[np.uint8]:
    """Panels of equal height, titled, left to right with :data:`PANEL_GAP` white pixels between."""
    if len(panels) != len(titles) or not panels:
        raise ValueError(f"{len(panels)} panels but {len(titles)} titles")
    height = panels[0].shape[0]
    if any(p.shape[0] != height for p in panels):
        raise ValueError(f"panels differ in height: {[p.shape[0] for p in panels]}")
    parts: list[NDArray[np.uint8]] = []
    for k, (panel, title) in enumerate(zip(panels, titles)):
        if k:
            parts.append(np.full((height + _TITLE_HEIGHT, PANEL_GAP, 3), 255, np.uint8))
        parts.append(_titled(panel, title))
    return np.concatenate(parts, axis=1)


def prediction_picture(
    image: NDArray[np.uint8],
    detections: Mapping[str, Any],
    classes: Sequence[str],
    score_thresh: float = 0.0,
    ground_truth: LabelFile | None = None,
    max_side: int = MAX_PICTURE_SIDE,
) -> NDArray[np.uint8]:
    """Predictions drawn on ``image`` (and the ground truth beside it when given).

    Args:
        image: ``(H, W, 3)`` uint8 RGB, the original image.
        detections: ``polygons (N, 8)``, ``scores (N,)``, ``classes (N,)`` (numpy or torch) in
            ``image``'s pixels.
        classes: class names (index = class id).
        score_thresh: only detections scoring at least this are drawn.
        ground_truth: labels of the image (original pixels); None draws the predictions alone.
        max_side: bound of the picture's width and height.
    Returns:
        ``(H, W, 3)``, or ``(H + title, 2 W + gap, 3)`` with the ground truth, downsized (aspect
        kept) to fit in ``max_side x max_side``.
    """
    if ground_truth is None:
        return draw_detections(image, dict(detections), classes, score_thresh=score_thresh, max_side=max_side)
    # Two panels side by side: each gets half the width (and the height less the title bar).
    panel = max(1, min((max_side - PANEL_GAP) // 2, max_side - _TITLE_HEIGHT))
    predicted = draw_detections(image, dict(detections), classes, score_thresh=score_thresh, max_side=panel)
    truth = draw_label_file(image, ground_truth, classes, max_side=panel)
    return side_by_side([truth, predicted], ["ground truth", f"predictions (score >= {score_thresh:g})"])


def save_picture(path: str | Path, image: NDArray[np.uint8], max_side: int = MAX_PICTURE_SIDE) -> Path:
    """Write ``image`` (RGB) atomically as PNG (or the suffix's format), downsized to ``max_side``
    when larger; creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, fit_picture(image, max_side)[0])
    return path
