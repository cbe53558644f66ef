"""Validation: run the model over a loader, decode, and score with DOTA Task1 mAP.

For each batch: uint8 images to the device, :func:`~bbavectors.data.letterbox.normalize_images`, the
model (autocast as in training), :func:`bbavectors.decode.decode_detections` with the batch's
letterbox parameters, so that polygons come back in **original image pixels**, then
:func:`DOTA_devkit.eval.evaluate_task1` against the labels of the same images (original pixels,
difficult objects handled the DOTA way). The result holds VOC07 11-point and area mAP over the
whole class list (DOTA's mean) and per-class AP.

In distributed training only rank 0 validates, on the whole validation set, with the plain
(unwrapped) model or its EMA; the other ranks wait (the validation sets are small next to training).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from tqdm import tqdm

from DOTA_devkit.eval import Task1Result, evaluate_task1
from DOTA_devkit.labels import LabelFile
from DOTA_devkit.task1 import ClassDetections

from ..config import Config
from ..data.letterbox import normalize_images
from ..decode import decode_detections
from ..runtime import autocast_context

__all__ = ["ValidationResult", "DetectionAccumulator", "predict_batch", "run_validation"]

logger = logging.getLogger(__name__)


class DetectionAccumulator:
    """Collects per-image detections into per-class :class:`ClassDetections` (numpy, CPU)."""

    def __init__(self, classes: Sequence[str], keep_images: int = 0) -> None:
        self.classes = list(classes)
        self._ids: list[list[str]] = [[] for _ in self.classes]
        self._scores: list[list[NDArray[np.float64]]] = [[] for _ in self.classes]
        self._polys: list[list[NDArray[np.float64]]] = [[] for _ in self.classes]
        self.keep_images = keep_images
        #: The first ``keep_images`` images' detections (for pictures), in original pixels.
        self.kept: dict[str, dict[str, NDArray[Any]]] = {}
        #: Every image added, in order (with or without detections).
        self.image_ids: list[str] = []

    def add(self, image_id: str, polygons: NDArray[Any], scores: NDArray[Any], classes: NDArray[Any]) -> None:
        """One image's detections: ``polygons (N, 8)``, ``scores (N,)``, ``classes (N,)``."""
        self.image_ids.append(image_id)
        polygons = np.asarray(polygons, np.float64).reshape(-1, 8)
        scores = np.asarray(scores, np.float64).reshape(-1)
        classes = np.asarray(classes, np.int64).reshape(-1)
        if len(self.kept) < self.keep_images:
            self.kept[image_id] = {"polygons": polygons, "scores": scores, "classes": classes}
        for k in np.unique(classes):
            sel = classes == k
            self._ids[int(k)].extend([image_id] * int(sel.sum()))
            self._scores[int(k)].append(scores[sel])
            self._polys[int(k)].append(polygons[sel])

    def result(self) -> dict[str, ClassDetections]:
        """``{class name: ClassDetections}`` for every class (empty ones included)."""
        out = {}
        for k, name in enumerate(self.classes):
            scores = np.concatenate(self._scores[k]) if self._scores[k] else np.zeros(0)
            polys = np.concatenate(self._polys[k]) if self._polys[k] else np.zeros((0, 8))
            out[name] = ClassDetections(list(self._ids[k]), scores, polys)
        return out


@dataclass
class ValidationResult:
    """mAP of one validation run and what it was computed from."""

    task1: Task1Result
    detections: dict[str, ClassDetections]
    num_images: int
    seconds: float
    #: Detections of the first few images (original pixels), for pictures.
    samples: dict[str, dict[str, NDArray[Any]]] = field(default_factory=dict)

    @property
    def map07(self) -> float:
        return float(self.task1.map07)

    def scalars(self) -> dict[str, float]:
        """Flat metrics for logs: map07, map_area, present-class means, per-class ap07 / ap_area."""
        r = self.task1
        values: dict[str, float] = {
            "map07": float(r.map07),
            "map_area": float(r.map_area),
            "map07_present": float(r.map07_present),
            "map_area_present": float(r.map_area_present),
            "images": float(self.num_images),
            "seconds": self.seconds,
        }
        for name, c in r.per_class.items():
            values[f"ap07/{name}"] = float(c.ap07)
            values[f"ap_area/{name}"] = float(c.ap_area)
        return values


@torch.no_grad()
def predict_batch(
    model: nn.Module,
    images: Tensor,
    letterbox: Tensor,
    cfg: Config,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> list[dict[str, Tensor]]:
    """Detections of a batch in original image pixels.

    Args:
        model: CTRBOX (eval mode is the caller's business).
        images: uint8 ``(B, 3, S, S)`` on the model's device.
        letterbox: ``(B, 3)`` ``[scale, pad_x, pad_y]``.
    Returns:
        :func:`~bbavectors.decode.decode_detections`'s list of per-image dicts.
    """
    x = normalize_images(images, cfg.data.mean, cfg.data.std)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast_context(images.device, amp_dtype):
        outputs = model(x)
    outputs = {k: v.float() for k, v in outputs.items()}
    return decode_detections(outputs, cfg.decode, cfg.model.down_ratio, letterbox=letterbox.to(images.device))


def run_validation(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    cfg: Config,
    classes: Sequence[str],
    ground_truth: Mapping[str, LabelFile],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    keep_images: int = 4,
    progress: bool = True,
) -> ValidationResult:
    """Decode every batch of ``loader`` and evaluate against ``ground_truth`` (module docstring).

    Args:
        model: the plain model (not DDP-wrapped); put in eval mode for the run and restored after.
        loader: batches of :func:`bbavectors.data.dataset.collate_samples` (evaluation letterbox).
        ground_truth: ``{image id: LabelFile}`` in original pixels, e.g. ``DotaDataset.ground_truth()``.
        keep_images: detections of this many first images are kept for pictures.
    Raises:
        ValueError: a batch holds an image id without ground truth.
    """
    start = time.perf_counter()
    acc = DetectionAccumulator(classes, keep_images)
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc="validate", disable=not progress, leave=False):
            missing = [i for i in batch["image_ids"] if i not in ground_truth]
            if missing:
                raise ValueError(f"validation images without ground truth: {missing[:5]}")
            images = batch["images"].to(device, non_blocking=True)
            dets = predict_batch(model, images, batch["letterbox"], cfg, amp_dtype, channels_last)
            for image_id, d in zip(batch["image_ids"], dets):
                acc.add(image_id, d["polygons"].cpu().numpy(), d["scores"].cpu().numpy(),
                        d["classes"].cpu().numpy())
    finally:
        model.train(was_training)
    if not acc.image_ids:
        raise ValueError("the validation loader yielded no images")
    detections = acc.result()
    # Exactly the images that were run are scored (an image without detections still counts its objects).
    evaluated = {i: ground_truth[i] for i in acc.image_ids}
    task1 = evaluate_task1(detections, evaluated, classes)
    return ValidationResult(task1, detections, len(acc.image_ids), time.perf_counter() - start, acc.kept)
