"""Validation: the validation images through the one inference path, scored with DOTA Task1 mAP.

The images are read, letterboxed, run and decoded exactly as ``tools/test.py`` does it
(:func:`bbavectors.inference.collect.predict_image_files` with a
:class:`~bbavectors.inference.predictor.Predictor` around the training model), so that validation
mAP and test mAP of the same weights on the same images are the same number (a test checks it).
Polygons come back in **original image pixels** and are scored by
:func:`DOTA_devkit.eval.evaluate_task1` against the labels of the same images (difficult objects
handled the DOTA way). The result holds VOC07 11-point and area mAP over the whole class list
(DOTA's mean) and per-class AP.

Unreadable images are **skipped and counted** (``num_unreadable``, logged), never replaced by
another image: the data set's training-time habit of returning the next readable sample would
score that neighbour twice (3 unreadable images made a perfect detector score AP07 0.73, and that
number picks ``best.pt``). Their objects are left out of the evaluation.

In distributed training only rank 0 validates, on the whole validation set, with the plain
(unwrapped) model or its EMA; the other ranks wait (the validation sets are small next to training).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from numpy.typing import NDArray
from torch import nn

from DOTA_devkit.eval import Task1Result, evaluate_task1
from DOTA_devkit.labels import LabelFile
from DOTA_devkit.task1 import ClassDetections

from ..config import Config
from ..inference.collect import DetectionCollector, predict_image_files
from ..inference.predictor import Predictor, amp_mode_of

__all__ = ["ValidationResult", "DetectionAccumulator", "validation_items", "run_validation"]

logger = logging.getLogger(__name__)

#: The one detection collector (:class:`bbavectors.inference.collect.DetectionCollector`), by its
#: former name here.
DetectionAccumulator = DetectionCollector


@dataclass
class ValidationResult:
    """mAP of one validation run and what it was computed from."""

    task1: Task1Result
    detections: dict[str, ClassDetections]
    num_images: int
    seconds: float
    #: Detections of the first few images (original pixels), for pictures.
    samples: dict[str, dict[str, NDArray[Any]]] = field(default_factory=dict)
    #: Ids of the images that could not be read (skipped, not evaluated).
    unreadable: list[str] = field(default_factory=list)

    @property
    def map07(self) -> float:
        return float(self.task1.map07)

    @property
    def num_unreadable(self) -> int:
        return len(self.unreadable)

    def scalars(self) -> dict[str, float]:
        """Flat metrics for logs: map07, map_area, present-class means, per-class ap07 / ap_area."""
        r = self.task1
        values: dict[str, float] = {
            "map07": float(r.map07),
            "map_area": float(r.map_area),
            "map07_present": float(r.map07_present),
            "map_area_present": float(r.map_area_present),
            "images": float(self.num_images),
            "unreadable": float(self.num_unreadable),
            "seconds": self.seconds,
        }
        for name, c in r.per_class.items():
            values[f"ap07/{name}"] = float(c.ap07)
            values[f"ap_area/{name}"] = float(c.ap_area)
        return values


def validation_items(source: Any) -> list[tuple[str, Path]]:
    """``(image id, path)`` of the validation images, in order.

    Args:
        source: a data set with ``records`` (``image_id``, ``path``; e.g. ``DotaDataset``), a
            ``DataLoader`` over one, or the pairs themselves.
    Raises:
        TypeError: none of those.
    """
    dataset = getattr(source, "dataset", source)
    records = getattr(dataset, "records", None)
    if records is not None:
        return [(r.image_id, Path(r.path)) for r in records]
    if isinstance(source, Sequence) and all(isinstance(i, tuple) and len(i) == 2 for i in source):
        return [(str(i), Path(p)) for i, p in source]
    raise TypeError(f"cannot find validation images in a {type(source).__name__}: give a DotaDataset, "
                    "a DataLoader over one, or (image id, path) pairs")


def run_validation(
    model: nn.Module,
    loader: Iterable[Any],
    cfg: Config,
    classes: Sequence[str],
    ground_truth: Mapping[str, LabelFile],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    keep_images: int = 4,
    progress: bool = True,
    workers: int | None = None,
    batch_size: int | None = None,
) -> ValidationResult:
    """Predict every validation image and evaluate against ``ground_truth`` (module docstring).

    Args:
        model: the plain model (not DDP-wrapped); put in eval mode for the run and restored after.
        loader: the validation images (:func:`validation_items`): a ``DataLoader`` over a
            ``DotaDataset`` gives its image list, and its batch size and workers unless
            ``batch_size`` / ``workers`` are given. The images are read again through the inference
            path, not taken from the loader's (training-style) batches.
        ground_truth: ``{image id: LabelFile}`` in original pixels, e.g. ``DotaDataset.ground_truth()``.
        amp_dtype: autocast dtype (None: float32).
        keep_images: detections of this many first images are kept for pictures.
    Raises:
        ValueError: an image without ground truth, or no readable image.
    """
    start = time.perf_counter()
    items = validation_items(loader)
    missing = [i for i, _ in items if i not in ground_truth]
    if missing:
        raise ValueError(f"validation images without ground truth: {missing[:5]}")
    batch = batch_size or int(getattr(loader, "batch_size", None) or 1)
    num_workers = workers if workers is not None else int(getattr(loader, "num_workers", 0))
    was_training = model.training
    try:
        predictor = Predictor(model, cfg, classes, device=device, batch_size=batch,
                              amp=amp_mode_of(amp_dtype), channels_last=channels_last)
        run = predict_image_files(predictor, items, workers=num_workers, progress=progress,
                                  keep_images=keep_images, desc="validate")
    finally:
        model.train(was_training)
    acc = run.collector
    if run.unreadable:
        logger.warning("validation: %d of %d image(s) unreadable, skipped and left out of the mAP",
                       len(run.unreadable), len(items))
    if not acc.image_ids:
        raise ValueError(f"none of the {len(items)} validation image(s) could be read")
    detections = acc.result()
    # Exactly the images that were run are scored (an image without detections still counts its objects).
    evaluated = {i: ground_truth[i] for i in acc.image_ids}
    task1 = evaluate_task1(detections, evaluated, classes)
    return ValidationResult(task1, detections, len(acc.image_ids), time.perf_counter() - start, acc.kept,
                            run.unreadable)
