"""Target encoding: speed against the original's per-object loop, and the measurements behind the
``cls_theta`` rule (``docs/targets.md``).

* :func:`bench_targets`: ms per sample of :func:`bbavectors.targets.encode_targets` on one CPU
  core, against :func:`original_style_targets` (the original BBAVectors ground-truth loop,
  re-implemented step for step: ``cv2.minAreaRect``, CornerNet radius, numpy Gaussian windows,
  ``cv2.boxPoints`` midpoints, raster IoU with ``cv2.fillPoly``), timed in the same run.
* :func:`bbavectors.roundtrip.horizontal_band_halfwidth`: the angular half-width of the
  "horizontal" band of the ``cls_theta`` rule, analytically.
* :func:`bbavectors.roundtrip.roundtrip_polygons`: polygon -> targets -> ideal logits -> decode, for
  many polygons at once.
* :func:`measure_cls_theta_rule`: per threshold, the fraction of real boxes that are
  "horizontal" and the worst round-trip IoU.

:func:`run_targets_benchmark` runs them all and :func:`format_table` makes markdown tables of the
result; ``python tools/benchmark.py targets [--data DIR]`` prints them.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

from DOTA_devkit.geometry import horizontal_iou, obb_to_poly, poly_iou, poly_to_obb
from DOTA_devkit.labels import read_dota_label

from ..config import DOWN_RATIO, TargetConfig
from ..roundtrip import horizontal_band_halfwidth, roundtrip_polygons
from ..targets import encode_targets

__all__ = [
    "random_polygons",
    "original_style_targets",
    "bench_targets",
    "horizontal_band_halfwidth",
    "roundtrip_polygons",
    "measure_cls_theta_rule",
    "real_boxes",
    "run_targets_benchmark",
    "format_table",
]

FloatArray = NDArray[np.float64]


def random_polygons(num_objects: int, input_size: int, rng: np.random.Generator) -> FloatArray:
    """``(N, 8)`` random rectangles inside an ``input_size`` square: long side 12-120 px, aspect
    1-6, any angle (a DOTA-like mix)."""
    long_side = rng.uniform(12, 120, num_objects)
    short_side = long_side / rng.uniform(1, 6, num_objects)
    margin = long_side / 2 + 1
    cx = rng.uniform(margin, input_size - margin)
    cy = rng.uniform(margin, input_size - margin)
    angle = rng.uniform(0, np.pi, num_objects)
    return obb_to_poly(np.stack([cx, cy, long_side, short_side, angle], axis=1))


# ----------------------------------------------------------------------------------------------
# The original's ground-truth loop, for timing only (it carries the original's flaws on purpose).
# ----------------------------------------------------------------------------------------------
def _cornernet_radius_as_shipped(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CornerNet's radius exactly as the original ships it (wrong roots); timing parity only."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _draw_gaussian_window(plane: NDArray[np.float32], centre: tuple[int, int], radius: int) -> None:
    size = 2 * radius + 1
    sigma = size / 6
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    cx, cy = centre
    hh, ww = plane.shape
    left, right = min(cx, radius), min(ww - cx, radius + 1)
    top, bottom = min(cy, radius), min(hh - cy, radius + 1)
    dst = plane[cy - top:cy + bottom, cx - left:cx + right]
    src = g[radius - top:radius + bottom, radius - left:radius + right]
    if min(dst.shape) > 0 and min(src.shape) > 0:
        np.maximum(dst, src, out=dst)


def _raster_iou(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    lo = np.minimum(a.min(0), b.min(0))
    hi = np.maximum(a.max(0), b.max(0))
    inter_lo = np.maximum(a.min(0), b.min(0))
    inter_hi = np.minimum(a.max(0), b.max(0))
    if (inter_lo >= inter_hi).any():
        return 0.0
    w, h = (np.ceil(hi - lo)).astype(int)
    ma = cv2.fillPoly(np.zeros((h, w), np.uint8), [np.round(a - lo).astype(np.int32)], 1)
    mb = cv2.fillPoly(np.zeros((h, w), np.uint8), [np.round(b - lo).astype(np.int32)], 1)
    inter = np.logical_and(ma, mb).sum()
    union = np.logical_or(ma, mb).sum()
    return float(inter) / max(float(union), 1e-6)


def original_style_targets(
    polygons: NDArray[np.float32],
    classes: NDArray[np.int64],
    num_classes: int,
    input_size: int,
    down_ratio: int = DOWN_RATIO,
    max_objects: int = 500,
) -> dict[str, NDArray[Any]]:
    """One sample's targets the original's way: a Python loop per object (timing baseline).

    Args:
        polygons: ``(N, 8)`` in input pixels; classes: ``(N,)``.
    Returns:
        ``hm (C, h, w)``, ``wh (max_objects, 10)``, ``reg (max_objects, 2)``, ``ind``, ``mask``,
        ``cls_theta (max_objects, 1)``.
    """
    size = input_size // down_ratio
    hm = np.zeros((num_classes, size, size), np.float32)
    wh = np.zeros((max_objects, 10), np.float32)
    reg = np.zeros((max_objects, 2), np.float32)
    ind = np.zeros(max_objects, np.int64)
    mask = np.zeros(max_objects, np.uint8)
    cls_theta = np.zeros((max_objects, 1), np.float32)
    rects = []
    for poly, cls in zip(polygons, classes):
        rect = cv2.minAreaRect((poly.reshape(4, 2) / down_ratio).astype(np.float32))
        if rect[1][0] < 3 and rect[1][1] < 3:
            continue
        rects.append((rect, int(cls)))
    for k, (((cx, cy), (bw, bh), theta), cls) in enumerate(rects[:max_objects]):
        radius = max(0, int(_cornernet_radius_as_shipped(math.ceil(bh), math.ceil(bw))))
        ct = np.asarray([cx, cy], np.float32)
        ct_int = ct.astype(np.int32)
        _draw_gaussian_window(hm[cls], (int(ct_int[0]), int(ct_int[1])), radius)
        ind[k] = ct_int[1] * size + ct_int[0]
        reg[k] = ct - ct_int
        mask[k] = 1
        pts = cv2.boxPoints(((cx, cy), (bw, bh), theta))
        bl, tl, tr, br = pts
        mids = np.asarray([(tl + tr) / 2, (tr + br) / 2, (bl + br) / 2, (tl + bl) / 2], np.float32)
        if theta in (-90.0, -0.0, 0.0):
            x, y = mids[:, 0], mids[:, 1]
            mids = mids[[np.argmin(y), np.argmax(x), np.argmax(y), np.argmin(x)]]
        wh[k, :8] = (mids - ct).reshape(-1)
        lo, hi = pts.min(0), pts.max(0)
        wh[k, 8:10] = hi - lo
        ext = np.asarray([[lo[0], hi[1]], lo, [hi[0], lo[1]], hi], np.float32)
        cls_theta[k, 0] = float(_raster_iou(np.asarray(pts, np.float32), ext) < 0.95)
    return {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "mask": mask, "cls_theta": cls_theta}


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocator, lazy init)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def bench_targets(
    num_objects: int,
    input_size: int = 608,
    batch: int = 16,
    repeats: int = 7,
    num_classes: int = 15,
    seed: int = 0,
) -> dict[str, float]:
    """Median ms per sample, one CPU core: ours (whole batch at once) vs the original's loop.

    Returns:
        ``{"objects", "ours_ms", "original_style_ms", "speedup"}`` (ms per sample).
    """
    rng = np.random.default_rng(seed)
    polys = [random_polygons(num_objects, input_size, rng).astype(np.float32) for _ in range(batch)]
    classes = [rng.integers(0, num_classes, num_objects) for _ in range(batch)]
    poly_t = [torch.from_numpy(p) for p in polys]
    cls_t = [torch.from_numpy(c) for c in classes]
    diff_t = [torch.zeros(num_objects, dtype=torch.long) for _ in range(batch)]
    cfg = TargetConfig()
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        ours = _median_ms(
            lambda: encode_targets(poly_t, cls_t, diff_t, num_classes, (input_size, input_size), cfg), repeats
        )
        base = _median_ms(
            lambda: [original_style_targets(p, c, num_classes, input_size) for p, c in zip(polys, classes)],
            repeats,
        )
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    return {
        "objects": float(num_objects),
        "ours_ms": ours / batch,
        "original_style_ms": base / batch,
        "speedup": base / max(ours, 1e-9),
    }


# ----------------------------------------------------------------------------------------------
# cls_theta rule
# ----------------------------------------------------------------------------------------------
def _real_boxes(data_dir: Path) -> dict[str, FloatArray]:
    """Label polygons of the real test sets under ``data_dir`` (``dota_examples``, ``dota_demo``,
    ``ssdd_rbox_train``), by set."""
    sets = {}
    for name in ("dota_examples", "dota_demo", "ssdd_rbox_train"):
        files = sorted((data_dir / name / "labelTxt").glob("*.txt"))
        polys = [read_dota_label(f).polygons() for f in files]
        sets[name] = np.concatenate(polys) if polys else np.zeros((0, 8))
    return sets


def measure_cls_theta_rule(
    polygons: FloatArray, thresholds: Sequence[float] = (0.95, 0.98, 0.99), min_size: float = 2.0
) -> list[dict[str, float]]:
    """For each threshold: fraction of boxes decoded with the external box, the worst round-trip
    IoU (decoded vs the oriented box that was encoded, and vs the label quadrilateral), and the
    fractions of boxes exactly axis-aligned and within (0, 2] degrees of an axis yet decoded with
    the vectors (the ones exposed to the labelling jump).

    Boxes with a short side below ``min_size`` (ignore regions) are left out and counted.
    """
    polys = np.asarray(polygons, dtype=np.float64).reshape(-1, 8)
    obb = poly_to_obb(polys)
    usable = obb[:, 3] >= min_size
    polys, obb = polys[usable], obb[usable]
    hiou = horizontal_iou(obb)
    folded = np.degrees(np.mod(obb[:, 4], np.pi / 2))
    tilt = np.minimum(folded, 90.0 - folded)  # degrees from the nearest axis
    near_axis = (tilt > 0) & (tilt <= 2.0)
    rows = []
    for thr in thresholds:
        cfg = replace(TargetConfig(), horizontal_iou=thr, min_size=min_size)
        decoded, rect = roundtrip_polygons(polys, cfg)
        lost = np.isnan(decoded).any(1)
        iou_rect = np.where(lost, 0.0, poly_iou(np.nan_to_num(decoded), rect))
        iou_label = np.where(lost, 0.0, poly_iou(np.nan_to_num(decoded), polys))
        worst = int(np.argmin(iou_rect))
        rows.append({
            "threshold": thr,
            "boxes": float(len(polys)),
            "skipped_small": float((~usable).sum()),
            "horizontal_fraction": float((hiou >= thr).mean()) if len(hiou) else 0.0,
            "worst_iou": float(iou_rect[worst]) if len(polys) else 1.0,
            "worst_iou_label": float(iou_label.min()) if len(polys) else 1.0,
            "lost": float(lost.sum()),
            "exactly_axis_aligned": float((tilt < 1e-9).mean()) if len(tilt) else 0.0,
            "near_axis_by_vectors": float((near_axis & (hiou < thr)).mean()) if len(tilt) else 0.0,
        })
    return rows


def real_boxes(data_dir: Path) -> dict[str, FloatArray]:
    """:func:`_real_boxes`, plus ``"all"``: every set's polygons together."""
    sets = _real_boxes(data_dir)
    sets["all"] = np.concatenate(list(sets.values()))
    return sets


def run_targets_benchmark(objects: Sequence[int] = (50, 200), repeats: int = 7, batch: int = 16,
                          data_dir: Path | None = None) -> dict[str, Any]:
    """Every measurement of this module: ``timing`` (one :func:`bench_targets` row per object
    count), ``band`` (half-widths by threshold and aspect) and, with ``data_dir``, ``cls_theta``
    (:func:`measure_cls_theta_rule` rows by set)."""
    result: dict[str, Any] = {
        "timing": [{**bench_targets(n, batch=batch, repeats=repeats), "objects": n} for n in objects],
        "band": {thr: {k: horizontal_band_halfwidth(thr, k) for k in (1, 2, 4, 8)}
                 for thr in (0.95, 0.98, 0.99)},
    }
    if data_dir is not None:
        sets = real_boxes(data_dir)
        result["cls_theta"] = {name: measure_cls_theta_rule(polys) for name, polys in sets.items()}
    return result


def format_table(result: dict[str, Any]) -> str:
    """:func:`run_targets_benchmark`'s results as markdown tables."""
    lines = ["| objects / sample | ours (ms/sample) | original-style loop (ms/sample) | speed-up |",
             "| --- | --- | --- | --- |"]
    for r in result["timing"]:
        lines.append(f"| {r['objects']} | {r['ours_ms']:.2f} | {r['original_style_ms']:.2f} | "
                     f"{r['speedup']:.1f}x |")
    lines += ["", "Half-width of the horizontal band (degrees):", "",
              "| threshold | aspect 1 | aspect 2 | aspect 4 | aspect 8 |", "| --- | --- | --- | --- | --- |"]
    for thr, by_aspect in result["band"].items():
        lines.append(f"| {thr} | " + " | ".join(f"{v:.3f}" for v in by_aspect.values()) + " |")
    if "cls_theta" in result:
        lines += ["", "| set | boxes | threshold | horizontal | exactly axis-aligned "
                  "| tilt in (0, 2] deg, vectors | worst IoU vs box | worst IoU vs label | lost |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, rows in result["cls_theta"].items():
            for row in rows:
                lines.append(
                    f"| {name} | {int(row['boxes'])} (+{int(row['skipped_small'])} < min_size) | "
                    f"{row['threshold']} | {100 * row['horizontal_fraction']:.1f}% | "
                    f"{100 * row['exactly_axis_aligned']:.1f}% | {100 * row['near_axis_by_vectors']:.1f}% | "
                    f"{row['worst_iou']:.4f} | {row['worst_iou_label']:.4f} | {int(row['lost'])} |")
    return "\n".join(lines)
