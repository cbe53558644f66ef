"""The slow, obviously-correct DOTA Task1 evaluator: a line-by-line transcription of ``voc_eval`` and
``voc_ap`` from CAPTAIN-WHU/DOTA_devkit ``dota_evaluation_task1.py`` (MIT), used by the tests as the
reference for :mod:`DOTA_devkit.eval`.

Changes from the original, none of which changes a result: input from memory (``LabelFile`` /
``ClassDetections``) instead of files, ``np.bool`` -> ``bool`` (numpy 2), no prints, an empty
detection list gives zero-length arrays instead of crashing, and the polygon IoU is shapely's
(:func:`DOTA_devkit.geometry.poly_iou`) instead of the compiled ``polyiou`` (pass ``iou_fn`` to
use another).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from DOTA_devkit.geometry import poly_iou
from DOTA_devkit.labels import LabelFile
from DOTA_devkit.task1 import ClassDetections


def shapely_iou(gt: np.ndarray, det: np.ndarray) -> float:
    return float(poly_iou(np.asarray(gt)[None], np.asarray(det)[None])[0])


def voc_ap(rec, prec, use_07_metric=False):  # noqa: ANN001, ANN201 (verbatim)
    if use_07_metric:
        # 11 point metric
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.
    else:
        # correct AP calculation
        # first append sentinel values at the end
        mrec = np.concatenate(([0.], rec, [1.]))
        mpre = np.concatenate(([0.], prec, [0.]))

        # compute the precision envelope
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])

        # to calculate area under PR curve, look for points
        # where X axis (recall) changes value
        i = np.where(mrec[1:] != mrec[:-1])[0]

        # and sum (\Delta recall) * prec
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def voc_eval(
    dets: ClassDetections,
    ground_truth: Mapping[str, LabelFile],
    classname: str,
    ovthresh: float = 0.5,
    use_07_metric: bool = False,
    iou_fn: Callable[[np.ndarray, np.ndarray], float] = shapely_iou,
) -> tuple[np.ndarray, np.ndarray, float]:
    imagenames = list(ground_truth)
    recs = {}
    for imagename in imagenames:
        recs[imagename] = [{"name": o.class_name, "difficult": int(o.difficult), "bbox": list(o.polygon)}
                           for o in ground_truth[imagename].objects]

    # extract gt objects for this class
    class_recs = {}
    npos = 0
    for imagename in imagenames:
        R = [obj for obj in recs[imagename] if obj['name'] == classname]
        bbox = np.array([x['bbox'] for x in R])
        difficult = np.array([x['difficult'] for x in R]).astype(bool)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {'bbox': bbox,
                                 'difficult': difficult,
                                 'det': det}

    image_ids = list(dets.image_ids)
    confidence = np.array([float(x) for x in dets.scores])
    BB = np.array([[float(z) for z in x] for x in dets.polygons]).reshape(-1, 8)

    # sort by confidence
    sorted_ind = np.argsort(-confidence)

    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    # go down dets and mark TPs and FPs
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R['bbox'].astype(float)

        if BBGT.size > 0:
            BBGT_xmin = np.min(BBGT[:, 0::2], axis=1)
            BBGT_ymin = np.min(BBGT[:, 1::2], axis=1)
            BBGT_xmax = np.max(BBGT[:, 0::2], axis=1)
            BBGT_ymax = np.max(BBGT[:, 1::2], axis=1)
            bb_xmin = np.min(bb[0::2])
            bb_ymin = np.min(bb[1::2])
            bb_xmax = np.max(bb[0::2])
            bb_ymax = np.max(bb[1::2])

            ixmin = np.maximum(BBGT_xmin, bb_xmin)
            iymin = np.maximum(BBGT_ymin, bb_ymin)
            ixmax = np.minimum(BBGT_xmax, bb_xmax)
            iymax = np.minimum(BBGT_ymax, bb_ymax)
            iw = np.maximum(ixmax - ixmin + 1., 0.)
            ih = np.maximum(iymax - iymin + 1., 0.)
            inters = iw * ih

            # union
            uni = ((bb_xmax - bb_xmin + 1.) * (bb_ymax - bb_ymin + 1.) +
                   (BBGT_xmax - BBGT_xmin + 1.) *
                   (BBGT_ymax - BBGT_ymin + 1.) - inters)

            overlaps = inters / uni

            BBGT_keep_mask = overlaps > 0
            BBGT_keep = BBGT[BBGT_keep_mask, :]
            BBGT_keep_index = np.where(overlaps > 0)[0]

            def calcoverlaps(BBGT_keep, bb):  # noqa: ANN001, ANN202 (verbatim)
                overlaps = []
                for index, _GT in enumerate(BBGT_keep):
                    overlap = iou_fn(BBGT_keep[index], bb)
                    overlaps.append(overlap)
                return overlaps
            if len(BBGT_keep) > 0:
                overlaps = calcoverlaps(BBGT_keep, bb)

                ovmax = np.max(overlaps)
                jmax = np.argmax(overlaps)
                jmax = BBGT_keep_index[jmax]

        if ovmax > ovthresh:
            if not R['difficult'][jmax]:
                if not R['det'][jmax]:
                    tp[d] = 1.
                    R['det'][jmax] = 1
                else:
                    fp[d] = 1.
        else:
            fp[d] = 1.

    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp / float(npos)
    # avoid divide by zero in case the first detection matches a difficult
    # ground truth
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = voc_ap(rec, prec, use_07_metric)

    return rec, prec, ap


def reference_map(
    detections: Mapping[str, ClassDetections],
    ground_truth: Mapping[str, LabelFile],
    classes: Sequence[str],
    ovthresh: float = 0.5,
    iou_fn: Callable[[np.ndarray, np.ndarray], float] = shapely_iou,
) -> tuple[dict[str, float], dict[str, float], float]:
    """(AP07 per class, area AP per class, mAP07 over the whole list) as DOTA's ``main``."""
    ap07: dict[str, float] = {}
    ap_area: dict[str, float] = {}
    total = 0
    for classname in classes:
        dets = detections.get(classname, ClassDetections.empty())
        rec, prec, ap = voc_eval(dets, ground_truth, classname, ovthresh, True, iou_fn)
        ap07[classname] = float(ap)
        ap_area[classname] = float(voc_ap(rec, prec, False))
        total = total + ap
    return ap07, ap_area, float(total / len(classes))
