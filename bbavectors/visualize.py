"""Pictures of oriented boxes: ground truth, Task1 detections, a checkpoint's predictions, augmentations.

Every drawing function takes and returns ``(H, W, 3)`` uint8 **RGB** arrays (the project's colour
order; :func:`bbavectors.data.image_io.write_image` converts to BGR for OpenCV when writing) and never
modifies its input. Lines are drawn without anti-aliasing so that each class keeps one exact colour
(:func:`class_colors`), which tests and users can rely on. Difficult objects are drawn with a thin
line. Labels (``name score``) sit above each polygon's top-most corner on a patch of the class
colour; a legend (top-right) lists the classes present with their counts (left out on pictures too
small to hold it in a third of their width and height).

Folder helpers (used by ``tools/visualize.py``) write one PNG per image atomically:
:func:`visualize_labels` (DOTA labelTxt), :func:`visualize_task1` (``Task1_<class>.txt``
detections) and :func:`visualize_checkpoint` (a checkpoint's predictions);
:func:`augmentation_grid` tiles augmented training samples of a :class:`DotaDataset` with their boxes.
"""

from __future__ import annotations

import colorsys
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from DOTA_devkit.labels import LabelFile, LabelReport, read_dota_label

from .data.image_io import ImageReadError, read_image, write_image

__all__ = [
    "class_colors",
    "draw_polygons",
    "draw_label_file",
    "draw_detections",
    "augmentation_grid",
    "visualize_labels",
    "visualize_task1",
    "visualize_checkpoint",
]

logger = logging.getLogger(__name__)

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


def _put_label(canvas: NDArray[np.uint8], text: str, anchor: tuple[int, int], color: tuple[int, int, int],
               font_scale: float) -> None:
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
) -> NDArray[np.uint8]:
    """Draw oriented boxes on a copy of ``image``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` gray).
        polygons: ``(N, 8)`` corners ``x1 y1 ... x4 y4`` in the image's pixels.
        classes: ``(N,)`` class indices (colour ``colors[c]``, default :func:`class_colors`).
        scores: ``(N,)`` shown after the class name when given.
        class_names: names for labels and legend (default ``class <c>``).
        difficult: ``(N,)``; non-zero objects are drawn with a 1-px line and tagged ``diff``.
    Returns:
        the new ``(H, W, 3)`` uint8 RGB picture.
    """
    canvas = _as_rgb_canvas(image)
    poly = np.asarray(polygons, dtype=np.float64).reshape(-1, 8)
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
            _put_label(canvas, text, (int(top[0]), int(top[1])), palette[c], font_scale)
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
    arrays = {k: _numpy(detections[k]) for k in ("polygons", "scores", "classes")}
    keep = arrays["scores"].reshape(-1) >= score_thresh
    return draw_polygons(image, arrays["polygons"].reshape(-1, 8)[keep], arrays["classes"].reshape(-1)[keep],
                         arrays["scores"].reshape(-1)[keep], classes, **kwargs)


def _numpy(x: Any) -> NDArray[Any]:
    if hasattr(x, "detach"):
        return np.asarray(x.detach().cpu().numpy())
    return np.asarray(x)


# ------------------------------------------------------------------------------ augmentation grid
def augmentation_grid(
    dataset: Any,
    n: int = 16,
    cols: int = 4,
    seed: int = 0,
    gap: int = 4,
    thickness: int = 2,
) -> NDArray[np.uint8]:
    """Tile ``n`` augmented samples of ``dataset`` (a ``DotaDataset``) with their boxes.

    Sample ``k`` is image ``k % len(dataset)`` with the augmentation drawn from
    ``np.random.default_rng(seed + k)`` (repeatable; images repeat with different augmentations when
    ``n > len(dataset)``). Cells are ``S x S`` (the dataset's input size) separated and surrounded
    by ``gap`` white pixels, with the image id at the top-left.

    Returns:
        ``(rows * S + (rows + 1) * gap, cols * S + (cols + 1) * gap, 3)`` uint8 RGB,
        ``rows = ceil(n / cols)``.
    """
    if n < 1 or cols < 1:
        raise ValueError(f"n and cols must be >= 1, got {n}, {cols}")
    if len(dataset) == 0:
        raise ValueError("the data set is empty")
    cols = min(cols, n)
    rows = -(-n // cols)
    names = list(dataset.classes)
    colors = class_colors(len(names))
    cells: list[NDArray[np.uint8]] = []
    for k in range(n):
        index = k % len(dataset)
        if hasattr(dataset, "load_sample"):
            sample = dataset.load_sample(index, rng=np.random.default_rng(seed + k))
        else:
            sample = dataset[index]
        img = _numpy(sample["image"]).transpose(1, 2, 0)
        cell = draw_polygons(img, _numpy(sample["polygons"]), _numpy(sample["classes"]), None, names, colors,
                             difficult=_numpy(sample["difficult"]), thickness=thickness, show_labels=False,
                             legend=False)
        _put_label(cell, f"{sample['image_id']} #{k}", (2, 0), (255, 255, 255), 0.4)
        cells.append(cell)
    size = cells[0].shape[0]
    grid = np.full((rows * size + (rows + 1) * gap, cols * size + (cols + 1) * gap, 3), 255, np.uint8)
    for k, cell in enumerate(cells):
        r, c = divmod(k, cols)
        y, x = gap + r * (size + gap), gap + c * (size + gap)
        grid[y:y + size, x:x + size] = cell
    return grid


# ------------------------------------------------------------------------------ folder helpers
def _list_images(images_dir: str | Path) -> dict[str, Path]:
    from .data.dataset import list_images

    found = list_images(images_dir)
    if not found:
        raise FileNotFoundError(f"no images in {images_dir}")
    return found


def _report_skipped(skipped: list[str]) -> None:
    if skipped:
        logger.warning("%d unreadable image(s) skipped (e.g. %s)", len(skipped), skipped[0])


def _read_or_skip(path: Path, skipped: list[str]) -> NDArray[np.uint8] | None:
    try:
        return read_image(path)
    except ImageReadError as e:
        skipped.append(str(path))
        logger.warning("skipped unreadable image: %s", e)
        return None


def visualize_labels(
    images_dir: str | Path, labels_dir: str | Path, out_dir: str | Path, classes: Sequence[str] | None = None,
    show_labels: bool = True,
) -> list[Path]:
    """Draw each image's DOTA labelTxt (``<labels_dir>/<id>.txt``); ``classes`` None = the classes
    found, sorted. Images without a label file are reported and skipped. Returns the written files."""
    images = _list_images(images_dir)
    labels_dir, out = Path(labels_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = LabelReport()
    parsed = {}
    missing = []
    for image_id in images:
        path = labels_dir / f"{image_id}.txt"
        if not path.is_file():
            missing.append(image_id)
            continue
        parsed[image_id] = read_dota_label(path, classes=classes, report=report)
    if missing:
        logger.warning("%d image(s) have no label file in %s and are skipped (e.g. %s)", len(missing),
                       labels_dir, missing[0])
    names = list(classes) if classes is not None else sorted(
        {o.class_name for lf in parsed.values() for o in lf.objects})
    logger.info("labels: %s", report.summary())
    written: list[Path] = []
    skipped: list[str] = []
    for image_id, lf in tqdm(parsed.items(), desc="draw labels", disable=len(parsed) < 10):
        image = _read_or_skip(images[image_id], skipped)
        if image is None:
            continue
        target = out / f"{image_id}.png"
        write_image(target, draw_label_file(image, lf, names, show_labels=show_labels))
        written.append(target)
    _report_skipped(skipped)
    return written


def visualize_task1(
    images_dir: str | Path, det_dir: str | Path, out_dir: str | Path, score_thresh: float = 0.3,
    classes: Sequence[str] | None = None, show_labels: bool = True,
) -> list[Path]:
    """Draw Task1 detections (``Task1_<class>.txt``) on each image that has some above the threshold.

    ``classes`` fixes colours and restricts the drawn classes (default: the classes of the files).
    Detections of image ids without an image file are counted and logged."""
    from DOTA_devkit.task1 import read_task1_dir

    images = _list_images(images_dir)
    dets = read_task1_dir(det_dir)
    names = list(classes) if classes is not None else sorted(dets)
    per_image: dict[str, list[tuple[NDArray[np.float64], float, int]]] = {}
    orphans = 0
    for ci, name in enumerate(names):
        cd = dets.get(name)
        if cd is None:
            continue
        for image_id, score, poly in zip(cd.image_ids, cd.scores, cd.polygons):
            if score < score_thresh:
                continue
            if image_id not in images:
                orphans += 1
                continue
            per_image.setdefault(image_id, []).append((np.asarray(poly, np.float64), float(score), ci))
    if orphans:
        logger.warning("%d detection(s) name images that are not in %s", orphans, images_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: list[str] = []
    for image_id, items in tqdm(sorted(per_image.items()), desc="draw detections",
                                disable=len(per_image) < 10):
        image = _read_or_skip(images[image_id], skipped)
        if image is None:
            continue
        polys = np.stack([p for p, _, _ in items])
        picture = draw_polygons(image, polys, [c for _, _, c in items], [s for _, s, _ in items], names,
                                show_labels=show_labels)
        target = out / f"{image_id}.png"
        write_image(target, picture)
        written.append(target)
    _report_skipped(skipped)
    return written


def visualize_checkpoint(
    images_dir: str | Path, checkpoint: str | Path, out_dir: str | Path, score_thresh: float = 0.3,
    device: str = "cpu", input_size: int | None = None, show_labels: bool = True,
) -> list[Path]:
    """Draw a checkpoint's predictions (letterbox, model, decode with NMS, original pixels)."""
    from .checkpoint import model_from_checkpoint
    from .config import DecodeConfig
    from .export.check import predict_with_pytorch

    images = _list_images(images_dir)
    model, cfg, classes = model_from_checkpoint(checkpoint, device)
    decode_cfg = DecodeConfig(top_k=cfg.decode.top_k, score_thresh=score_thresh,
                              cls_theta_thresh=cfg.decode.cls_theta_thresh, nms_thresh=cfg.decode.nms_thresh)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: list[str] = []
    for image_id, path in tqdm(sorted(images.items()), desc="predict", disable=len(images) < 10):
        image = _read_or_skip(path, skipped)
        if image is None:
            continue
        det = predict_with_pytorch(model, [image], input_size or cfg.data.input_size, cfg.data.mean,
                                   cfg.data.std, decode_cfg)[0]
        target = out / f"{image_id}.png"
        write_image(target, draw_detections(image, det, classes, show_labels=show_labels))
        written.append(target)
    _report_skipped(skipped)
    return written
