"""Drawing primitives for oriented boxes: the bottom layer of every picture the project writes.

Every function takes and returns ``(H, W, 3)`` uint8 **RGB** arrays (the project's colour order;
:func:`bbavectors.data.image_io.write_image` converts to BGR for OpenCV when writing) and never
modifies its input. Lines are drawn without anti-aliasing so that each class keeps one exact colour
(:func:`class_colors`), which tests and users can rely on. Difficult objects are drawn with a thin
line. Labels (``name score``) sit above each polygon's top-most corner on a patch of the class
colour; a legend (top-right) lists the classes present with their counts (left out on pictures too
small to hold it in a third of their width and height).

Size bound: pictures are downsized to at most :data:`MAX_PICTURE_SIDE` px on the long side
**before** anything is drawn or copied (``max_side``), so a picture of a 20000 x 20000 scene costs
a few MB, not gigabytes (one once killed a training run by going to TensorBoard at full size).

This module imports no other part of bbavectors but the label types: the workflows that read
folders, run checkpoints or compose training pictures (:mod:`bbavectors.visualize`,
:mod:`bbavectors.engine.draw`, the test runner) sit above it.
"""

from __future__ import annotations

import colorsys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from DOTA_devkit.labels import LabelFile

__all__ = [
    "MAX_PICTURE_SIDE",
    "class_colors",
    "fit_picture",
    "draw_polygons",
    "draw_label_file",
    "draw_detections",
    "put_label",
    "side_by_side",
    "to_numpy",
]

#: Longest side of any picture written (files and TensorBoard), in pixels.
MAX_PICTURE_SIDE = 1600


def fit_picture(image: NDArray[Any], max_side: int | None = MAX_PICTURE_SIDE
                ) -> tuple[NDArray[Any], float, float]:
    """``image`` downsized (``INTER_AREA``) so that its long side is at most ``max_side``.

    Returns:
        the image (itself when small enough, or ``max_side`` None) and the x and y scale factors that
        map its input pixels to the returned picture's.
    """
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image, 1.0, 1.0
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    scale = max_side / max(h, w)
    nw, nh = max(1, min(max_side, round(w * scale))), max(1, min(max_side, round(h * scale)))
    small = cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=image.dtype), nw / w, nh / h


#: First colours (RGB): saturated, far apart, readable on aerial images and on the synthetic set's objects
#: (classes plane, ship, small-vehicle, large-vehicle, storage-tank get red, green, gold, magenta, orange,
#: none the colour of its own painted object); more colours come from the HSV wheel.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 56, 56), (50, 205, 50), (255, 215, 0), (255, 0, 255), (255, 140, 0), (0, 255, 255),
    (30, 144, 255), (148, 0, 211), (0, 128, 128), (255, 105, 180), (154, 205, 50), (0, 0, 205),
    (205, 92, 92), (127, 255, 212), (218, 165, 32), (138, 43, 226), (0, 250, 154), (255, 250, 250),
)


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """``num_classes`` distinct RGB colours, the same for a class index in every picture."""
    colors = list(_PALETTE[:num_classes])
    golden = 0.618033988749895
    for i in range(len(colors), num_classes):
        r, g, b = colorsys.hsv_to_rgb((i * golden) % 1.0, 0.85, 1.0)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _as_rgb_canvas(image: NDArray[Any]) -> NDArray[np.uint8]:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {a.dtype}")
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {a.shape}")
    return np.ascontiguousarray(a.copy())


def put_label(canvas: NDArray[np.uint8], text: str, anchor: tuple[int, int], color: tuple[int, int, int],
              font_scale: float) -> None:
    """Write ``text`` on a patch of ``color`` above ``anchor`` (inside the picture), in place."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    h, w = canvas.shape[:2]
    x, y = int(anchor[0]), int(anchor[1]) - 3
    if y - th - base < 0:  # no room above the box: write inside it, clear of the corner's two edges
        x, y = x + 4, int(anchor[1]) + th + base + 4
    x = int(np.clip(x, 0, max(0, w - tw - 2)))
    y = int(np.clip(y, th + base, h - 1))
    cv2.rectangle(canvas, (x, y - th - base), (x + tw + 2, y), color, -1)
    cv2.putText(canvas, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, _text_color(color), 1,
                cv2.LINE_AA)


def _draw_legend(canvas: NDArray[np.uint8], entries: list[tuple[str, tuple[int, int, int]]],
                 font_scale: float) -> None:
    if not entries:
        return
    sizes = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0] for t, _ in entries]
    line_h = max(s[1] for s in sizes) + 8
    box_w = max(s[0] for s in sizes) + line_h + 12
    box_h = line_h * len(entries) + 6
    h, w = canvas.shape[:2]
    if box_w > w / 3 or box_h > h / 3:
        return  # a legend would hide much of a small picture: the labels name the classes there
    x0, y0 = w - box_w - 4, 4
    region = canvas[y0:y0 + box_h, x0:x0 + box_w]
    # Darken (not cover) the image under the legend so that it stays readable on any background.
    region[:] = (region.astype(np.float32) * 0.35).astype(np.uint8)
    for k, ((text, color), (_, th)) in enumerate(zip(entries, sizes)):
        top = y0 + 4 + k * line_h
        cv2.rectangle(canvas, (x0 + 4, top), (x0 + 4 + line_h - 6, top + line_h - 6), color, -1)
        cv2.putText(canvas, text, (x0 + line_h + 4, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), 1, cv2.LINE_AA)


def draw_polygons(
    image: NDArray[np.uint8],
    polygons: NDArray[Any] | Sequence[Sequence[float]],
    classes: NDArray[Any] | Sequence[int],
    scores: NDArray[Any] | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    colors: Sequence[tuple[int, int, int]] | None = None,
    difficult: NDArray[Any] | Sequence[int] | None = None,
    thickness: int = 2,
    show_labels: bool = True,
    legend: bool = True,
    font_scale: float = 0.4,
    max_side: int | None = MAX_PICTURE_SIDE,
) -> NDArray[np.uint8]:
    """Draw oriented boxes on a copy of ``image``, downsized first to ``max_side`` (None: full size).

    Args:
        image: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` gray).
        polygons: ``(N, 8)`` corners ``x1 y1 ... x4 y4`` in the image's pixels.
        classes: ``(N,)`` class indices (colour ``colors[c]``, default :func:`class_colors`).
        scores: ``(N,)`` shown after the class name when given.
        class_names: names for labels and legend (default ``class <c>``).
        difficult: ``(N,)``; non-zero objects are drawn with a 1-px line and tagged ``diff``.
    Returns:
        the new uint8 RGB picture: ``(H, W, 3)``, or smaller when the long side exceeds ``max_side``
        (the polygons are scaled with it).
    """
    small, sx, sy = fit_picture(np.asarray(image), max_side)
    canvas = _as_rgb_canvas(small)
    poly = np.asarray(polygons, dtype=np.float64).reshape(-1, 8) * np.array([sx, sy] * 4)
    cls = np.asarray(classes, dtype=np.int64).reshape(-1)
    if len(cls) != len(poly):
        raise ValueError(f"{len(poly)} polygons but {len(cls)} classes")
    sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if sc is not None and len(sc) != len(poly):
        raise ValueError(f"{len(poly)} polygons but {len(sc)} scores")
    diff = np.zeros(len(poly), np.int64) if difficult is None else np.asarray(difficult).reshape(-1)
    if not np.isfinite(poly).all():
        raise ValueError("polygons contain NaN or infinite coordinates")
    num_classes = max(int(cls.max()) + 1 if len(cls) else 0, len(class_names or ()))
    if len(cls) and cls.min() < 0:
        raise ValueError(f"negative class index {int(cls.min())}")
    palette = list(colors) if colors is not None else class_colors(num_classes)
    if len(palette) < num_classes:
        raise ValueError(f"{len(palette)} colours for {num_classes} classes")
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(num_classes)]
    pts = np.rint(poly.reshape(-1, 4, 2)).astype(np.int32)
    for p, c, d in zip(pts, cls, diff):
        cv2.polylines(canvas, [p], True, palette[c], 1 if d else thickness, cv2.LINE_8)
    if show_labels:
        for i, (p, c, d) in enumerate(zip(pts, cls, diff)):
            text = names[c] + (f" {sc[i]:.2f}" if sc is not None else "") + (" diff" if d else "")
            top = p[np.argmin(p[:, 1])]
            put_label(canvas, text, (int(top[0]), int(top[1])), palette[c], font_scale)
    if legend and len(cls):
        counts = Counter(int(c) for c in cls)
        _draw_legend(canvas, [(f"{names[c]} ({counts[c]})", palette[c]) for c in sorted(counts)], font_scale)
    return canvas


def draw_label_file(image: NDArray[np.uint8], labels: LabelFile, classes: Sequence[str],
                    **kwargs: Any) -> NDArray[np.uint8]:
    """Ground truth of a parsed DOTA label file (classes outside ``classes`` are an error)."""
    unknown = sorted({o.class_name for o in labels.objects} - set(classes))
    if unknown:
        raise ValueError(f"label classes {unknown} are not in the class list")
    return draw_polygons(image, labels.polygons(), labels.class_ids(classes), None, classes,
                         difficult=labels.difficult(), **kwargs)


def draw_detections(image: NDArray[np.uint8], detections: Mapping[str, Any], classes: Sequence[str],
                    score_thresh: float = 0.0, **kwargs: Any) -> NDArray[np.uint8]:
    """Detections dict ``polygons (N, 8)``, ``scores (N,)``, ``classes (N,)`` (numpy or torch) with
    score >= ``score_thresh``."""
    arrays = {k: to_numpy(detections[k]) for k in ("polygons", "scores", "classes")}
    keep = arrays["scores"].reshape(-1) >= score_thresh
    return draw_polygons(image, arrays["polygons"].reshape(-1, 8)[keep], arrays["classes"].reshape(-1)[keep],
                         arrays["scores"].reshape(-1)[keep], classes, **kwargs)


def to_numpy(x: Any) -> NDArray[Any]:
    if hasattr(x, "detach"):
        return np.asarray(x.detach().cpu().numpy())
    return np.asarray(x)


def side_by_side(left: NDArray[np.uint8], right: NDArray[np.uint8], captions: Sequence[str] = ("", ""),
                 gap: int = 8, font_scale: float = 0.5) -> NDArray[np.uint8]:
    """``left`` and ``right`` (``(H, W, 3)`` uint8 RGB, heights may differ) next to each other on a
    white background with a ``gap``-px white column between them, each caption on a white band above
    its picture. Returns ``(band + max(H), W_left + gap + W_right, 3)``."""
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    band = th + base + 8 if any(captions) else 0
    h = band + max(left.shape[0], right.shape[0])
    out = np.full((h, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    for x, picture, caption in ((0, left, captions[0]), (left.shape[1] + gap, right, captions[1])):
        out[band:band + picture.shape[0], x:x + picture.shape[1]] = _as_rgb_canvas(picture)
        if caption:
            cv2.putText(out, caption, (x + 2, band - base - 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return out
