"""What a data set holds, before training on it: :func:`check_dataset` reads a data set in any
readable format (nothing is written) and returns a :class:`DatasetCheck`; ``str()`` of it is the
report ``tools/convert_dataset.py --check`` prints.

Object sizes are those of each polygon's minimum-area rectangle (:func:`~DOTA_devkit.geometry.poly_to_obb`):
``short side``, ``long side`` (pixels) and ``aspect = long / short``. Angles are that rectangle's
long-side direction in ``[0, 180)`` degrees, clockwise on screen; *axis-aligned* means within 1 degree
of 0 or 90. An object *touches the border* when a corner lies within 1 px of the image edge or outside
it. *Duplicates* are pairs of objects of one class in one image whose polygons overlap with IoU > 0.9.

Suggestions (the rule, so that it can be argued with):

* ``--input-size``: the median image long side rounded up to a multiple of 32, kept within
  ``[512, 1024]``; images whose long side exceeds 1024 (the 95th percentile) call for cutting into
  patches (``tools/split_dota.py``) of ``--subsize 1024``.
* ``--gap``: the 95th percentile of the object long side rounded up to 10 px (at most half the
  patch), so 95% of objects fit whole in at least one patch.
* ``--rates``: ``1.0``; add ``2.0`` when the median short side is under 8 px (the detector's output
  stride is 4: such objects cover under 2x2 heatmap cells), add ``0.5`` when the 95th percentile
  long side exceeds half the patch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry import poly_iou_matrix, poly_to_obb
from .common import ConversionReport, image_size
from .dataset import DEFAULT_MIN_SCORE, read_source

__all__ = ["PERCENTILES", "DatasetCheck", "check_dataset"]

#: Percentiles reported for the size distributions.
PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)
ANGLE_BIN_DEG = 15
AXIS_ALIGNED_DEG = 1.0
BORDER_PX = 1.0
DUPLICATE_IOU = 0.9


@dataclass
class DatasetCheck:
    """The report of :func:`check_dataset` (module docstring for the definitions)."""

    format: str
    images: int = 0
    objects: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    difficult: int = 0
    objects_per_image_max: int = 0
    objects_per_image_mean: float = 0.0
    short_side: dict[int, float] = field(default_factory=dict)  # percentile -> px
    long_side: dict[int, float] = field(default_factory=dict)
    aspect: dict[int, float] = field(default_factory=dict)
    image_long_side: dict[int, float] = field(default_factory=dict)
    angle_histogram: list[int] = field(default_factory=list)  # counts per ANGLE_BIN_DEG bin of [0, 180)
    axis_aligned: int = 0
    touching_border: int = 0
    duplicates: int = 0
    images_without_labels: list[str] = field(default_factory=list)
    labels_without_images: list[str] = field(default_factory=list)
    unreadable_images: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # objects and files the readers skipped, by kind
    suggestions: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return format_check(self)


def _percentiles(values: Sequence[float] | np.ndarray) -> dict[int, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {}
    return {p: float(np.percentile(a, p)) for p in PERCENTILES}


def _touches_border(poly: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    x, y = poly[:, 0::2], poly[:, 1::2]
    w, h = size
    near = (x <= BORDER_PX) | (x >= w - BORDER_PX) | (y <= BORDER_PX) | (y >= h - BORDER_PX)
    return np.asarray(near.any(axis=1), dtype=bool)


def _duplicates(poly: np.ndarray, names: list[str]) -> int:
    count = 0
    for name in set(names):
        idx = [i for i, n in enumerate(names) if n == name]
        if len(idx) < 2:
            continue
        iou = poly_iou_matrix(poly[idx], poly[idx])
        count += int(np.triu(iou > DUPLICATE_IOU, k=1).sum())
    return count


def _round_up(v: float, step: int) -> int:
    return int(math.ceil(v / step) * step)


def suggest_settings(check: DatasetCheck) -> list[str]:
    """The ``--input-size`` / split suggestions (module docstring for the rule)."""
    if not check.long_side or not check.image_long_side:
        return ["no objects: nothing to suggest"]
    out = []
    image_p50, image_p95 = check.image_long_side[50], check.image_long_side[95]
    subsize = 1024
    if image_p95 > subsize:
        gap = min(_round_up(check.long_side[95], 10), subsize // 2)
        rates = ["1.0"]
        if check.short_side[50] < 8:
            rates.append("2.0")
        if check.long_side[95] > subsize / 2:
            rates.insert(0, "0.5")
        out.append(f"images are large (95% long side {image_p95:.0f} px > {subsize}): cut them, "
                   f"tools/split_dota.py --subsize {subsize} --gap {gap} --rates {' '.join(rates)}, "
                   f"then train with --input-size {subsize}")
    else:
        size = min(max(_round_up(image_p50, 32), 512), 1024)
        out.append(f"--input-size {size} (median image long side {image_p50:.0f} px, rounded up to 32, "
                   "kept in [512, 1024]); no cutting needed")
        if check.short_side[50] < 8:
            out.append(f"median object short side {check.short_side[50]:.1f} px < 8 px: upsample "
                       "(tools/split_dota.py --rates 2.0) or train at a larger --input-size")
    return out


def check_dataset(
    fmt: str,
    src: str | Path,
    classes: Sequence[str] | None = None,
    image_dir: str | Path | None = None,
    class_map: Mapping[str, str] | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
) -> DatasetCheck:
    """Read a data set in format ``fmt`` (see :func:`~.dataset.read_source`) and measure it.

    Every image is decoded (unreadable ones are listed). Nothing is written.
    """
    report = ConversionReport()
    data = read_source(fmt, src, report, classes, image_dir, False, class_map, min_score)
    out = DatasetCheck(format=fmt)
    per_image: list[int] = []
    short, long_, aspect, angles, image_long = [], [], [], [], []
    per_class: Counter[str] = Counter()
    for sample in data.samples:
        if sample.image is None:
            out.labels_without_images.append(sample.image_id)
            continue
        size = sample.size
        if size is None:
            decoded = image_size(sample.image)
            size = decoded[:2] if decoded else None
        if size is None:
            out.unreadable_images.append(sample.image_id)
            continue
        out.images += 1
        image_long.append(max(size))
        objs = sample.labels.objects
        per_image.append(len(objs))
        if not objs:
            continue
        poly = sample.labels.polygons()
        names = sample.labels.class_names()
        per_class.update(names)
        out.difficult += int((sample.labels.difficult() > 0).sum())
        obb = poly_to_obb(poly)
        w, h = obb[:, 2], obb[:, 3]
        short += h.tolist()
        long_ += w.tolist()
        aspect += (w / np.maximum(h, 1e-9)).tolist()
        deg = np.degrees(obb[:, 4])
        angles += deg.tolist()
        off = np.minimum(np.mod(deg, 90), 90 - np.mod(deg, 90))
        out.axis_aligned += int((off <= AXIS_ALIGNED_DEG).sum())
        out.touching_border += int(_touches_border(poly, size).sum())
        out.duplicates += _duplicates(poly, names)
    out.images_without_labels = sorted(set(data.images_without_labels))
    # Label files the reader could not pair with an image (YOLO-OBB orphans) are issues, not samples.
    orphans = {Path(i.path).stem for i in report.labels.issues if i.kind == "missing-image"}
    out.labels_without_images = sorted(set(out.labels_without_images) | orphans)
    out.objects = sum(per_class.values())
    out.per_class = dict(sorted(per_class.items(), key=lambda kv: (-kv[1], kv[0])))
    out.objects_per_image_max = max(per_image, default=0)
    out.objects_per_image_mean = float(np.mean(per_image)) if per_image else 0.0
    out.short_side, out.long_side, out.aspect = _percentiles(short), _percentiles(long_), _percentiles(aspect)
    out.image_long_side = _percentiles(image_long)
    bins = np.arange(0, 180 + ANGLE_BIN_DEG, ANGLE_BIN_DEG)
    out.angle_histogram = np.histogram(np.mod(angles, 180), bins=bins)[0].astype(int).tolist()
    out.skipped = dict(sorted(report.object_skips().items()) + sorted(report.file_skips().items()))
    out.suggestions = suggest_settings(out)
    return out


def _pct(d: Mapping[int, float], digits: int = 1) -> str:
    return "  ".join(f"p{p} {v:.{digits}f}" for p, v in d.items()) if d else "-"


def _ids(ids: Sequence[str]) -> str:
    return f"{len(ids)}" + (f" ({', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''})" if ids else "")


def format_check(c: DatasetCheck) -> str:
    """The printed report."""
    n = max(c.objects, 1)
    lines = [
        f"data set check ({c.format})",
        f"images: {c.images}   objects: {c.objects}   "
        f"difficult: {c.difficult} ({100 * c.difficult / n:.1f}%)",
        f"objects per image: max {c.objects_per_image_max}, mean {c.objects_per_image_mean:.2f}",
        "objects per class: " + (", ".join(f"{k} {v}" for k, v in c.per_class.items()) or "-"),
        f"object short side (px): {_pct(c.short_side)}",
        f"object long side (px):  {_pct(c.long_side)}",
        f"aspect (long/short):    {_pct(c.aspect, 2)}",
        f"image long side (px):   {_pct(c.image_long_side, 0)}",
        f"angle histogram ({ANGLE_BIN_DEG}-degree bins from 0): " + " ".join(map(str, c.angle_histogram)),
        f"axis-aligned (within {AXIS_ALIGNED_DEG:g} deg of 0/90): {c.axis_aligned} "
        f"({100 * c.axis_aligned / n:.1f}%)",
        f"touching the image border: {c.touching_border} ({100 * c.touching_border / n:.1f}%)",
        f"duplicate pairs (same class, IoU > {DUPLICATE_IOU}): {c.duplicates}",
        f"images without labels: {_ids(c.images_without_labels)}",
        f"labels without images: {_ids(c.labels_without_images)}",
        f"unreadable images: {_ids(c.unreadable_images)}",
        "skipped while reading: " + (", ".join(f"{v} {k}" for k, v in c.skipped.items()) or "nothing"),
        "suggested settings:",
    ]
    lines += [f"  {s}" for s in c.suggestions]
    return "\n".join(lines)
