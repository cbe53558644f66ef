"""Scoring shared by every model of the accuracy benchmark: per-image detections become Task1
detections in memory, scored by :func:`DOTA_devkit.eval.evaluate_task1`, with the median inference
time per image measured on the same calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from DOTA_devkit.eval import Task1Result, evaluate_task1, load_ground_truth
from DOTA_devkit.task1 import ClassDetections

from ..data.image_io import read_image
from ..inference.predictor import Detections

__all__ = ["collect_task1", "score_predictions", "timed_predictions", "predict_and_score"]


def collect_task1(per_image: Sequence[tuple[str, Detections]], classes: Sequence[str]
                  ) -> dict[str, ClassDetections]:
    """``[(image id, Detections)]`` -> ``{class: ClassDetections}`` for every class (Task1 files in
    memory, empty classes included)."""
    ids: list[list[str]] = [[] for _ in classes]
    scores: list[list[NDArray[np.float64]]] = [[] for _ in classes]
    polys: list[list[NDArray[np.float64]]] = [[] for _ in classes]
    for image_id, dets in per_image:
        cls = dets["classes"].detach().cpu().numpy().reshape(-1)
        s = dets["scores"].detach().cpu().double().numpy().reshape(-1)
        p = dets["polygons"].detach().cpu().double().numpy().reshape(-1, 8)
        for c in np.unique(cls):
            if not 0 <= c < len(classes):
                raise ValueError(f"{image_id}: class index {int(c)} outside [0, {len(classes)})")
            sel = cls == c
            ids[int(c)] += [image_id] * int(sel.sum())
            scores[int(c)].append(s[sel])
            polys[int(c)].append(p[sel])
    return {name: ClassDetections(ids[k], np.concatenate(scores[k]) if scores[k] else np.zeros(0),
                                  np.concatenate(polys[k]) if polys[k] else np.zeros((0, 8)))
            for k, name in enumerate(classes)}


def score_predictions(per_image: Sequence[tuple[str, Detections]], classes: Sequence[str],
                      label_dir: Path, image_ids: Sequence[str]) -> Task1Result:
    """DOTA Task1 evaluation (VOC07 and area AP at IoU 0.5) of per-image detections."""
    ground_truth = load_ground_truth(label_dir, list(image_ids))
    return evaluate_task1(collect_task1(per_image, classes), ground_truth, classes)


def timed_predictions(predict: Callable[[NDArray[np.uint8]], Detections], images: dict[str, Path],
                       warmup: int, timed: int | None) -> tuple[list[tuple[str, Detections]], float]:
    """Run ``predict`` on every image (RGB uint8) at batch 1; returns the detections and the median ms
    of the timed calls (the first ``warmup`` calls on the first image are not timed)."""
    ids = list(images)
    first = read_image(images[ids[0]])
    for _ in range(warmup):
        predict(first)
    out: list[tuple[str, Detections]] = []
    times: list[float] = []
    for k, image_id in enumerate(ids):
        image = read_image(images[image_id])
        start = time.perf_counter()
        dets = predict(image)
        elapsed = time.perf_counter() - start
        if timed is None or k < timed:
            times.append(elapsed)
        out.append((image_id, dets))
    return out, 1000.0 * statistics.median(times)


def predict_and_score(predict: Callable[[NDArray[np.uint8]], Detections], images: dict[str, Path],
                      classes: Sequence[str], label_dir: Path, *, warmup: int, timed: int | None
                      ) -> tuple[list[tuple[str, Detections]], float, Task1Result]:
    """:func:`timed_predictions` then :func:`score_predictions` against the labels in ``label_dir``:
    the same steps for every model; returns the detections, the median ms per image and the
    evaluation."""
    per_image, ms = timed_predictions(predict, images, warmup, timed)
    result = score_predictions(per_image, classes, label_dir, list(images))
    return per_image, ms, result
