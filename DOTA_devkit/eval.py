"""DOTA Task1 evaluation: DOTA's own procedure (``dota_evaluation_task1.py`` of CAPTAIN-WHU's
DOTA_devkit), reproduced result for result, vectorised.

The procedure, per class (``voc_eval`` there, faithfully mirrored here):

1. Ground truth: the objects of the class in every image of the image set, in file order.
   ``difficult`` is read as ``bool(int(flag))``: **difficult 2** (DOTA's split tool's mark for a
   cut object) **counts as difficult**, like 1. ``npos`` = number of non-difficult objects.
2. Detections are sorted with ``np.argsort(-confidence)`` exactly as DOTA does: numpy's default,
   *non-stable* sort over the class's detections in file order, so equal scores are ordered the
   same way as DOTA orders them.
3. For each detection in that order: the ground truths of its image whose external boxes overlap
   (DOTA's pixel convention: ``iw = min(xmax) - max(xmin) + 1 > 0``, same for ``ih``) are
   candidates; ``ovmax`` is the largest polygon IoU among them, ``jmax`` the first ground truth
   reaching it. ``ovmax > iou_thresh`` (strictly): a difficult ``jmax`` makes the detection
   neither TP nor FP; else the first detection to claim ``jmax`` is a TP and later ones FPs.
   Otherwise FP.
4. ``rec = cumsum(tp) / npos``, ``prec = cumsum(tp) / max(cumsum(tp) + cumsum(fp), eps)``;
   AP07 = VOC07 11-point AP (``use_07_metric=True``, what DOTA reports), AP(area) = all-point
   VOC12 AP.
5. mAP = mean over the **whole class list**, a class without ground truth counting 0 (DOTA's
   way). Beside it, the mean over the classes that have (non-difficult) ground truth.

Vectorisation: step 3 only needs ``(ovmax, jmax)`` per detection, which do not depend on the order;
the TP/FP marking then reduces to "first claimant of each ground truth in the sorted order". All
candidate pairs of all classes are found at once and their IoU computed in one batch
(:func:`DOTA_devkit.polygon_clip.quad_iou`, equal to shapely's polygon IoU to rounding).

Where DOTA's script crashes we decide (documented choices): an empty or missing Task1 file is a
class without detections (AP 0 when it has ground truth); a class without non-difficult ground
truth has AP07 0 (as DOTA) and AP(area) 0 (DOTA: NaN) and an undefined recall (NaN, ``null`` in
JSON); detections on images outside the image set raise :class:`ValueError` unless
``ignore_unknown_images`` (then they are dropped, counted and logged). Ground truth objects of
classes outside the class list are ignored, as DOTA does. One difference from DOTA's own reader:
ground truth comes from :func:`DOTA_devkit.labels.read_dota_label`, which reports and skips
degenerate polygons (area < 1 px^2) that DOTA would keep as unmatchable objects.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from .atomic import atomic_write_text
from .image_io import write_image_atomic
from .image_sets import read_split_file
from .labels import LabelFile, LabelReport, read_dota_label
from .polygon_clip import quad_iou
from .task1 import ClassDetections, Task1ReadReport, read_task1_dir

__all__ = [
    "ClassResult",
    "Task1Result",
    "voc_ap",
    "evaluate_task1",
    "check_iou_thresh",
    "suggest_classes",
    "read_imageset",
    "load_ground_truth",
    "evaluate_task1_dirs",
    "EvalTimings",
    "write_result_json",
    "draw_pr_curve",
    "write_pr_curves",
]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass
class ClassResult:
    """Task1 result of one class.

    ``num_gt`` is DOTA's ``npos`` (non-difficult objects); ``recall`` the final recall (NaN without
    ground truth); ``recall_curve`` / ``precision_curve`` ``(num_det,)`` follow the sorted detections
    (detections matched to difficult objects stay in the curve with no step, as in DOTA).
    """

    ap07: float
    ap_area: float
    num_gt: int
    num_det: int
    recall: float
    num_difficult: int = 0
    num_tp: int = 0
    recall_curve: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)
    precision_curve: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"ap07": self.ap07, "ap_area": self.ap_area, "num_gt": self.num_gt,
                "num_difficult": self.num_difficult, "num_det": self.num_det, "num_tp": self.num_tp,
                "recall": None if math.isnan(self.recall) else self.recall}


@dataclass
class Task1Result:
    """Per-class results and the two kinds of mean (module docstring, step 5)."""

    classes: tuple[str, ...]
    per_class: dict[str, ClassResult]
    iou_thresh: float = 0.5
    num_images: int = 0
    num_ignored_detections: int = 0

    @property
    def classes_with_gt(self) -> list[str]:
        return [c for c in self.classes if self.per_class[c].num_gt > 0]

    def _mean(self, names: Sequence[str], key: str) -> float:
        total = 0.0
        for name in names:  # summed in class order, as DOTA's script
            total = total + getattr(self.per_class[name], key)
        return total / len(names) if names else 0.0

    @property
    def map07(self) -> float:
        """Mean VOC07 AP over the whole class list (DOTA's mAP)."""
        return self._mean(self.classes, "ap07")

    @property
    def map_area(self) -> float:
        """Mean area AP over the whole class list."""
        return self._mean(self.classes, "ap_area")

    @property
    def map07_present(self) -> float:
        """Mean VOC07 AP over the classes with ground truth."""
        return self._mean(self.classes_with_gt, "ap07")

    @property
    def map_area_present(self) -> float:
        """Mean area AP over the classes with ground truth."""
        return self._mean(self.classes_with_gt, "ap_area")

    @property
    def mean_recall_present(self) -> float | None:
        """Mean final recall over the classes with ground truth (None without any, as ``to_dict``
        writes a class's missing recall: JSON has no NaN). VOC07's AP gets its 0.9 level only from a
        recall of 0.9 or more, a step of up to 1/11 AP."""
        names = self.classes_with_gt
        return self._mean(names, "recall") if names else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "iou_thresh": self.iou_thresh,
            "num_images": self.num_images,
            "num_classes": len(self.classes),
            "num_classes_with_gt": len(self.classes_with_gt),
            "map07": self.map07,
            "map_area": self.map_area,
            "map07_present": self.map07_present,
            "map_area_present": self.map_area_present,
            "num_ignored_detections": self.num_ignored_detections,
            "per_class": {c: self.per_class[c].to_dict() for c in self.classes},
        }

    def format_table(self) -> str:
        """Per-class table (AP in %) and both means, clearly labelled."""
        n_all, n_gt = len(self.classes), len(self.classes_with_gt)
        mean_all = f"mAP (DOTA, all {n_all} classes)"
        mean_gt = f"mAP (classes with GT, n={n_gt})"
        width = max([len(c) for c in self.classes] + [len(mean_all), len(mean_gt)])
        head = (f"{'class':<{width}}  {'AP07':>6}  {'AP area':>7}  {'#GT':>6}  {'#diff':>5}  {'#det':>7}  "
                f"{'recall':>6}")
        lines = [f"DOTA Task1, IoU > {self.iou_thresh:g}, {self.num_images} image(s); AP in %, #GT without "
                 "difficult", head, "-" * len(head)]
        for c in self.classes:
            r = self.per_class[c]
            rec = "-" if math.isnan(r.recall) else f"{r.recall:.4f}"
            lines.append(f"{c:<{width}}  {100 * r.ap07:6.2f}  {100 * r.ap_area:7.2f}  {r.num_gt:6d}  "
                         f"{r.num_difficult:5d}  {r.num_det:7d}  {rec:>6}")
        lines.append("-" * len(head))
        lines.append(f"{mean_all:<{width}}  {100 * self.map07:6.2f}  {100 * self.map_area:7.2f}")
        lines.append(f"{mean_gt:<{width}}  {100 * self.map07_present:6.2f}  "
                     f"{100 * self.map_area_present:7.2f}")
        if self.num_ignored_detections:
            lines.append(f"({self.num_ignored_detections} detection(s) on images outside the image set "
                         "ignored)")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------- AP
def voc_ap(rec: FloatArray, prec: FloatArray, use_07_metric: bool = False) -> float:
    """DOTA's ``voc_ap``: VOC07 11-point AP or the all-point (area) AP.

    Args:
        rec, prec: ``(N,)`` recall and precision after each sorted detection.
    """
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):  # the very thresholds (and float sums) of DOTA's loop
            above = rec >= t
            p = np.max(prec[above]) if np.sum(above) != 0 else 0
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    # The precision envelope: DOTA's backward loop of pairwise maxima, as one accumulate.
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


# ----------------------------------------------------------------------------------- matching
@dataclass
class _GroundTruth:
    """All ground truth objects sorted by (class, image, file order)."""

    polygons: FloatArray  # (G, 8)
    hbb: FloatArray  # (4, G) xmin, ymin, xmax, ymax
    difficult: NDArray[np.bool_]  # (G,)
    keys: IntArray  # (G,) class * num_images + image, ascending
    num_images: int
    npos: IntArray  # (C,) non-difficult objects per class
    ndiff: IntArray  # (C,)

    def group_range(self, keys: IntArray) -> tuple[IntArray, IntArray]:
        lo = np.searchsorted(self.keys, keys, side="left")
        hi = np.searchsorted(self.keys, keys, side="right")
        return lo.astype(np.int64), hi.astype(np.int64)


def _hbb(poly: FloatArray) -> FloatArray:
    """``(4, N)``: xmin, ymin, xmax, ymax rows (contiguous, for fast gathers)."""
    xs, ys = poly[:, 0::2], poly[:, 1::2]
    return np.stack([xs.min(axis=1), ys.min(axis=1), xs.max(axis=1), ys.max(axis=1)])


def _gather_ground_truth(ground_truth: Mapping[str, LabelFile], classes: Sequence[str]) -> _GroundTruth:
    class_index = {c: i for i, c in enumerate(classes)}
    objects = [o for lf in ground_truth.values() for o in lf.objects]
    n_obj = len(objects)
    img = np.repeat(np.arange(len(ground_truth), dtype=np.int64),
                    [len(lf.objects) for lf in ground_truth.values()])
    cls = np.fromiter(map(class_index.get, [o.class_name for o in objects], repeat(-1)), np.int64, n_obj)
    diff = np.fromiter((o.difficult for o in objects), np.int64, n_obj).astype(bool)
    polys = np.array([o.polygon for o in objects], dtype=np.float64).reshape(-1, 8)
    keep = cls >= 0
    if not keep.all():
        logger.info("%d ground truth object(s) of classes outside the class list ignored", int((~keep).sum()))
        img, cls, diff, polys = img[keep], cls[keep], diff[keep], polys[keep]
    n_img = len(ground_truth)
    keys = cls * n_img + img
    order = np.argsort(keys, kind="stable")  # stable: file order within an image, as DOTA's R
    n_cls = len(classes)
    npos = np.bincount(cls[~diff], minlength=n_cls).astype(np.int64)
    ndiff = np.bincount(cls[diff], minlength=n_cls).astype(np.int64)
    polys = polys[order]
    return _GroundTruth(polys, _hbb(polys), diff[order], keys[order], n_img, npos, ndiff)


def _candidate_pairs(det_keys: IntArray, det_polys: FloatArray, gt: _GroundTruth
                     ) -> tuple[IntArray, IntArray]:
    """(detection, ground truth) pairs of the same class and image whose external boxes overlap by
    DOTA's ``+ 1`` pixel rule, ordered by detection then ground truth."""
    lo, hi = gt.group_range(det_keys)
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    det_idx = np.repeat(np.arange(len(det_keys), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    gt_idx = np.repeat(lo - starts, counts) + np.arange(total, dtype=np.int64)
    hd = _hbb(det_polys)
    hg = gt.hbb
    iw = np.minimum(hg[2][gt_idx], hd[2][det_idx]) - np.maximum(hg[0][gt_idx], hd[0][det_idx]) + 1.0
    ih = np.minimum(hg[3][gt_idx], hd[3][det_idx]) - np.maximum(hg[1][gt_idx], hd[1][det_idx]) + 1.0
    keep = (iw > 0) & (ih > 0)
    return det_idx[keep], gt_idx[keep]


def _best_match(num_det: int, det_idx: IntArray, gt_idx: IntArray, iou: FloatArray
                ) -> tuple[FloatArray, IntArray]:
    """Per detection: ``ovmax`` (``-inf`` without candidates) and ``jmax`` (first ground truth, in
    file order, reaching it; -1 without candidates). Pairs are sorted by detection, then ground truth."""
    ovmax = np.full(num_det, -np.inf)
    jmax = np.full(num_det, -1, dtype=np.int64)
    if len(det_idx) == 0:
        return ovmax, jmax
    starts = np.flatnonzero(np.r_[True, det_idx[1:] != det_idx[:-1]])
    dets = det_idx[starts]
    ovmax[dets] = np.maximum.reduceat(iou, starts)
    at_max = iou == ovmax[det_idx]
    d_m, g_m = det_idx[at_max], gt_idx[at_max]
    first = np.r_[True, d_m[1:] != d_m[:-1]]
    jmax[d_m[first]] = g_m[first]
    return ovmax, jmax


def _tp_fp(ovmax: FloatArray, jmax: IntArray, difficult: NDArray[np.bool_], iou_thresh: float
           ) -> tuple[FloatArray, FloatArray]:
    """DOTA's marking loop, vectorised: the first claimant of a non-difficult object is a TP."""
    n = len(ovmax)
    tp = np.zeros(n)
    fp = np.zeros(n)
    matched = ovmax > iou_thresh
    fp[~matched] = 1.0
    cand = np.flatnonzero(matched)
    if len(cand):
        cand = cand[~difficult[jmax[cand]]]  # a difficult match is neither TP nor FP
        _, first = np.unique(jmax[cand], return_index=True)
        fp[cand] = 1.0
        fp[cand[first]] = 0.0
        tp[cand[first]] = 1.0
    return tp, fp


def _class_result(tp: FloatArray, fp: FloatArray, npos: int, ndiff: int) -> ClassResult:
    n = len(tp)
    tp_c = np.cumsum(tp)
    fp_c = np.cumsum(fp)
    prec = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
    if npos > 0:
        rec = tp_c / float(npos)
        ap07, ap_area = voc_ap(rec, prec, True), voc_ap(rec, prec, False)
        recall = float(rec[-1]) if n else 0.0
    else:
        rec = np.full(n, np.nan)
        ap07, ap_area, recall = 0.0, 0.0, float("nan")
    return ClassResult(ap07, ap_area, int(npos), n, recall, int(ndiff), int(tp.sum()), rec, prec)


def evaluate_task1(
    detections: Mapping[str, ClassDetections],
    ground_truth: Mapping[str, LabelFile],
    classes: Sequence[str],
    iou_thresh: float = 0.5,
    ignore_unknown_images: bool = False,
) -> Task1Result:
    """DOTA Task1 evaluation (module docstring).

    Args:
        detections: ``{class: ClassDetections}`` in file order; missing classes have no detections;
            classes outside ``classes`` are ignored (logged).
        ground_truth: ``{image id: LabelFile}``; its keys are the image set.
        classes: the class list (the mAP averages over all of it).
        iou_thresh: a match needs polygon IoU strictly greater.
        ignore_unknown_images: drop (and count) detections whose image is not in ``ground_truth``
            instead of raising.
    Raises:
        ValueError: detections on images outside the image set (without ``ignore_unknown_images``).
    """
    check_iou_thresh(iou_thresh)
    classes = tuple(classes)
    extra = sorted(set(detections) - set(classes))
    if extra:
        logger.warning("detections of classes outside the class list ignored: %s%s", ", ".join(extra),
                       suggest_classes(extra, classes))
    _warn_unknown_gt_classes(ground_truth, classes)
    gt = _gather_ground_truth(ground_truth, classes)
    image_index = {name: i for i, name in enumerate(ground_truth)}
    ignored = 0
    per_class_dets: list[tuple[FloatArray, IntArray, FloatArray]] = []
    for c, name in enumerate(classes):
        dets = detections.get(name)
        if dets is None or len(dets) == 0:
            per_class_dets.append((np.zeros((0, 8)), np.zeros(0, np.int64), np.zeros(0)))
            continue
        img = np.fromiter(map(image_index.get, dets.image_ids, repeat(-1)), dtype=np.int64, count=len(dets))
        scores, polys = dets.scores, dets.polygons
        unknown = img < 0
        if unknown.any():
            examples = sorted({dets.image_ids[i] for i in np.flatnonzero(unknown)[:1000]})[:5]
            msg = (f"class {name!r}: {int(unknown.sum())} detection(s) on images outside the image set "
                   f"({len(ground_truth)} images), e.g. {', '.join(examples)}")
            if not ignore_unknown_images:
                raise ValueError(msg + " (use ignore_unknown_images / --ignore-unknown-images to drop them)")
            logger.warning("%s: ignored", msg)
            ignored += int(unknown.sum())
            img, scores, polys = img[~unknown], scores[~unknown], polys[~unknown]
        order = np.argsort(-scores)  # DOTA's very call: default (non-stable) sort kind
        per_class_dets.append((polys[order], c * gt.num_images + img[order], scores[order]))

    # All candidate pairs of all classes, one IoU batch.
    pair_parts = [_candidate_pairs(keys, polys, gt) for polys, keys, _ in per_class_dets]
    offsets = np.cumsum([0] + [len(p[0]) for p in pair_parts])
    if offsets[-1]:
        all_det_polys = np.concatenate([per_class_dets[k][0][p[0]] for k, p in enumerate(pair_parts)])
        all_gt_polys = gt.polygons[np.concatenate([p[1] for p in pair_parts])]
        all_iou = quad_iou(all_gt_polys, all_det_polys)  # (GT, det) argument order, as DOTA's iou_poly
    else:
        all_iou = np.zeros(0)

    results: dict[str, ClassResult] = {}
    for c, name in enumerate(classes):
        polys, _, _ = per_class_dets[c]
        det_idx, gt_idx = pair_parts[c]
        iou = all_iou[offsets[c]:offsets[c + 1]]
        ovmax, jmax = _best_match(len(polys), det_idx, gt_idx, iou)
        tp, fp = _tp_fp(ovmax, jmax, gt.difficult, iou_thresh)
        results[name] = _class_result(tp, fp, int(gt.npos[c]), int(gt.ndiff[c]))
    return Task1Result(classes, results, iou_thresh, len(ground_truth), ignored)


def check_iou_thresh(iou_thresh: float) -> None:
    """Raise ``ValueError`` unless ``0 < iou_thresh < 1`` (NaN fails: every match would be refused)."""
    if not 0.0 < iou_thresh < 1.0:  # also False for NaN
        raise ValueError(f"IoU threshold must be in (0, 1), got {iou_thresh}")


def suggest_classes(unknown: Sequence[str], classes: Sequence[str]) -> str:
    """`` (did you mean 'plane' for 'Plane'?)`` for names that differ from a class of ``classes``
    only in case, ``-``/``_``/space, or a few letters; empty when none is close."""
    def key(name: str) -> str:
        return name.lower().replace("_", "-").replace(" ", "-")

    by_key = {key(c): c for c in classes}
    hints = []
    for name in unknown:
        match = by_key.get(key(name))
        if match is None:
            close = difflib.get_close_matches(key(name), list(by_key), n=1, cutoff=0.8)
            match = by_key[close[0]] if close else None
        if match is not None:
            hints.append(f"{match!r} for {name!r}")
    return f" (did you mean {', '.join(hints[:5])}?)" if hints else ""


def _warn_unknown_gt_classes(ground_truth: Mapping[str, LabelFile], classes: Sequence[str]) -> None:
    found: dict[str, int] = {}
    for lf in ground_truth.values():
        for o in lf.objects:
            found[o.class_name] = found.get(o.class_name, 0) + 1
    known = set(classes)
    unknown = sorted(c for c in found if c not in known)
    if not unknown:
        return
    n_unknown = sum(found[c] for c in unknown)
    hint = suggest_classes(unknown, classes)
    if n_unknown == sum(found.values()):
        logger.warning("none of the %d ground-truth object(s) has a class of the class list (%d classes, "
                       "e.g. %s): every AP will be 0; found %s%s", n_unknown, len(classes),
                       ", ".join(classes[:3]), ", ".join(unknown[:10]), hint)
    else:
        logger.warning("%d ground-truth object(s) of classes outside the class list ignored: %s%s",
                       n_unknown, ", ".join(unknown[:10]), hint)


# ----------------------------------------------------------------------------------- files
def read_imageset(path: str | Path) -> list[str]:
    """Image ids of an image set file (:func:`DOTA_devkit.image_sets.read_split_file`); an empty set
    is an error here (nothing to evaluate)."""
    ids = read_split_file(path)
    if not ids:
        raise ValueError(f"{path}: image set file is empty")
    return ids


def load_ground_truth(
    label_dir: str | Path,
    image_ids: Sequence[str] | None = None,
    report: LabelReport | None = None,
) -> dict[str, LabelFile]:
    """``{image id: LabelFile}`` from ``label_dir/<id>.txt`` (all ``*.txt`` when ``image_ids`` is None).

    An id of the image set without a label file is evaluated as an image without objects (its
    detections are false positives) and logged; if no id has a label file, that is an error.
    """
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise FileNotFoundError(f"label folder not found: {label_dir}")
    report = report if report is not None else LabelReport()
    if image_ids is None:
        image_ids = [p.stem for p in sorted(label_dir.glob("*.txt"))]
        if not image_ids:
            raise FileNotFoundError(f"{label_dir}: no label files (*.txt)")
    out: dict[str, LabelFile] = {}
    missing: list[str] = []
    for image_id in image_ids:
        path = label_dir / f"{image_id}.txt"
        if path.is_file():
            out[image_id] = read_dota_label(path, report=report)
        else:
            missing.append(image_id)
            out[image_id] = LabelFile()
    if missing and len(missing) == len(out):
        raise FileNotFoundError(f"{label_dir}: none of the {len(out)} image(s) of the image set has a "
                                f"label file (e.g. {missing[0]}.txt)")
    if missing:
        logger.warning("%d image(s) of the image set have no label file in %s, evaluated as images "
                       "without objects: %s", len(missing), label_dir, ", ".join(missing[:5]))
    return out


@dataclass
class EvalTimings:
    """Seconds spent reading detections, reading ground truth and computing."""

    read_detections: float = 0.0
    read_ground_truth: float = 0.0
    compute: float = 0.0


def evaluate_task1_dirs(
    det_dir: str | Path,
    label_dir: str | Path,
    classes: Sequence[str],
    imageset: str | Path | None = None,
    iou_thresh: float = 0.5,
    ignore_unknown_images: bool = False,
    timings: EvalTimings | None = None,
) -> Task1Result:
    """:func:`evaluate_task1` on a folder of ``Task1_<class>.txt`` and a labelTxt folder.

    Args:
        imageset: file of image ids; default: every label file of ``label_dir``.
        timings: filled with the time of each stage when given.
    Raises:
        ValueError: ``iou_thresh`` outside (0, 1); detections on unknown images (see
            :func:`evaluate_task1`).
        FileNotFoundError: missing folders; no ``Task1_<class>.txt`` file of the class list in
            ``det_dir`` (a wrong folder would otherwise score 0 without a word).
    """
    check_iou_thresh(iou_thresh)
    t0 = time.perf_counter()
    det_report = Task1ReadReport()
    dets = read_task1_dir(det_dir, classes, report=det_report)
    if det_report.files == 0:
        present = sorted(p.name[len("Task1_"):-len(".txt")] for p in Path(det_dir).glob("Task1_*.txt"))
        if not present:
            raise FileNotFoundError(f"{det_dir}: no Task1_<class>.txt files")
        raise FileNotFoundError(f"{det_dir}: no Task1 file of a class of the class list (found "
                                f"{', '.join(present[:5])}){suggest_classes(present, classes)}")
    t1 = time.perf_counter()
    ids = read_imageset(imageset) if imageset is not None else None
    label_report = LabelReport()
    gt = load_ground_truth(label_dir, ids, label_report)
    t2 = time.perf_counter()
    result = evaluate_task1(dets, gt, classes, iou_thresh, ignore_unknown_images)
    t3 = time.perf_counter()
    logger.info("detections: %s", det_report.summary())
    logger.info("ground truth: %s", label_report.summary())
    if timings is not None:
        timings.read_detections, timings.read_ground_truth, timings.compute = t1 - t0, t2 - t1, t3 - t2
    return result


def write_result_json(path: str | Path, result: Task1Result, extra: Mapping[str, Any] | None = None) -> None:
    """``result.to_dict()`` (plus ``extra``) as JSON, atomically."""
    path = Path(path)
    data = {**(extra or {}), **result.to_dict()}
    atomic_write_text(path, json.dumps(data, indent=2))


# ----------------------------------------------------------------------------------- PR pictures
_W, _H = 640, 480
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 50, 60


def _to_px(r: float, p: float) -> tuple[int, int]:
    x = _LEFT + r * (_W - _LEFT - _RIGHT)
    y = _H - _BOTTOM - p * (_H - _TOP - _BOTTOM)
    return int(round(x)), int(round(y))


def draw_pr_curve(name: str, result: ClassResult) -> NDArray[np.uint8]:
    """A ``(480, 640, 3)`` uint8 BGR picture of the class's precision-recall curve: axes with ticks,
    the curve (blue), the 11 VOC07 interpolated points (red) and the APs in the title."""
    img = np.full((_H, _W, 3), 255, np.uint8)
    font, grey, black = cv2.FONT_HERSHEY_SIMPLEX, (200, 200, 200), (0, 0, 0)
    for k in range(6):
        v = k / 5
        x, _ = _to_px(v, 0)
        _, y = _to_px(0, v)
        cv2.line(img, (x, _TOP), (x, _H - _BOTTOM), grey, 1)
        cv2.line(img, (_LEFT, y), (_W - _RIGHT, y), grey, 1)
        cv2.putText(img, f"{v:.1f}", (x - 12, _H - _BOTTOM + 20), font, 0.45, black, 1, cv2.LINE_AA)
        cv2.putText(img, f"{v:.1f}", (_LEFT - 35, y + 5), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.rectangle(img, (_LEFT, _TOP), (_W - _RIGHT, _H - _BOTTOM), black, 1)
    cv2.putText(img, "recall", (_W // 2 - 25, _H - 15), font, 0.55, black, 1, cv2.LINE_AA)
    cv2.putText(img, "precision", (5, _TOP - 10), font, 0.55, black, 1, cv2.LINE_AA)
    title = f"{name}: AP07 {100 * result.ap07:.2f}  AP(area) {100 * result.ap_area:.2f}  #GT {result.num_gt}"
    cv2.putText(img, title, (_LEFT + 60, 25), font, 0.55, black, 1, cv2.LINE_AA)
    rec, prec = result.recall_curve, result.precision_curve
    if result.num_gt == 0 or len(rec) == 0:
        note = "no ground truth" if result.num_gt == 0 else "no detections"
        cv2.putText(img, note, (_W // 2 - 60, _H // 2), font, 0.7, (0, 0, 255), 2, cv2.LINE_AA)
        return img
    pts = np.array([_to_px(float(r), float(p)) for r, p in zip(rec, prec)], np.int32)
    if len(pts) > 4000:  # more points than pixels: thin them for drawing only
        pts = pts[np.linspace(0, len(pts) - 1, 4000).astype(np.int64)]
    cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, (200, 80, 0), 2, cv2.LINE_AA)
    for t in np.arange(0.0, 1.1, 0.1):
        above = rec >= t
        p = float(np.max(prec[above])) if above.any() else 0.0
        cv2.circle(img, _to_px(float(t), p), 4, (0, 0, 220), -1, cv2.LINE_AA)
    return img


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def write_pr_curves(result: Task1Result, out_dir: str | Path) -> list[Path]:
    """One ``pr_<class>.png`` per class in ``out_dir`` (created); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in result.classes:
        path = out / f"pr_{_safe_name(name)}.png"
        write_image_atomic(path, draw_pr_curve(name, result.per_class[name]))
        paths.append(path)
    return paths
