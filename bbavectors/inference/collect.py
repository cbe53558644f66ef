"""Image files -> a :class:`~.predictor.Predictor` -> per-class detections: the loop that validation
(:func:`bbavectors.engine.validate.run_validation`) and ``tools/test.py``
(:func:`bbavectors.inference.runner.run_inference`) share, so that both read, letterbox, skip and
score images the same way.

* :class:`ImageFileDataset` reads images in loader workers; an unreadable file becomes an item
  with ``error`` set. It is **skipped and counted**, never replaced by another image (replacing
  scores the neighbour twice: 3 unreadable images of a validation set made a perfect detector score
  AP07 0.73 instead of 1.00).
* :func:`predict_image_files` runs the predictor over them in batches and feeds a
  :class:`DetectionCollector`, the one accumulator of detections (per class, as
  :class:`DOTA_devkit.task1.ClassDetections` for Task1 files and the evaluation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from DOTA_devkit.task1 import ClassDetections

from ..data.image_io import ImageReadError, read_image
from ..data.loader import worker_init
from .predictor import Detections, Predictor, letterbox_tensor

__all__ = [
    "ImageFileDataset",
    "collate_patches",
    "DetectionCollector",
    "FilesRun",
    "predict_image_files",
    "report_unreadable",
]

logger = logging.getLogger(__name__)

#: Called with ``(image_id, original image (H, W, 3) uint8 or None, detections on the CPU)``.
OnImage = Callable[[str, NDArray[np.uint8] | None, Detections], None]


class ImageFileDataset(Dataset[dict[str, Any]]):
    """Reads images in loader workers; a bad file becomes an item with ``error`` set (no exception).

    Args:
        items: ``(image id, path)`` pairs.
        input_size: letterbox side (patch mode); None returns the decoded image as is (scene mode).
        keep_original: also return the decoded image (for pictures) in patch mode.

    Item: ``image_id``; ``error`` (None or the reason); ``image``: uint8 ``(3, S, S)`` letterboxed
    (patch mode) or ``(H, W, 3)`` as decoded (scene mode); ``letterbox`` ``(3,)`` (patch mode);
    ``original`` ``(H, W, 3)`` when kept.
    """

    def __init__(self, items: Sequence[tuple[str, Path]], input_size: int | None,
                 keep_original: bool = False) -> None:
        self.items = list(items)
        self.input_size = input_size
        self.keep_original = keep_original

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id, path = self.items[index]
        try:
            image = read_image(path)
        except (ImageReadError, cv2.error) as e:
            return {"image_id": image_id, "path": str(path), "error": str(e)}
        item: dict[str, Any] = {"image_id": image_id, "path": str(path), "error": None}
        if self.input_size is None:
            item["image"] = torch.from_numpy(image)
            return item
        item["image"], item["letterbox"] = letterbox_tensor(image, self.input_size)
        if self.keep_original:
            item["original"] = torch.from_numpy(image)
        return item


def collate_patches(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch the readable items (runs in the worker, so the batch is pinned as one tensor).

    Returns:
        ``images`` uint8 ``(B, 3, S, S)`` or None when none was readable, ``letterbox`` ``(B, 3)``,
        ``image_ids`` and ``originals`` (None entries unless kept) of the readable ones, and
        ``errors``: the unreadable items (``image_id``, ``path``, ``error``).
    """
    good = [it for it in items if it["error"] is None]
    return {
        "images": torch.stack([it["image"] for it in good]) if good else None,
        "letterbox": torch.stack([it["letterbox"] for it in good]) if good else None,
        "image_ids": [it["image_id"] for it in good],
        "originals": [it.get("original") for it in good],
        "errors": [it for it in items if it["error"] is not None],
    }


class DetectionCollector:
    """Accumulates per-image detections into per-class :class:`ClassDetections` (numpy, CPU).

    Args:
        classes: class names (index = class id).
        keep_images: the detections of this many first images are also kept whole in :attr:`kept`
            (for pictures).
    """

    def __init__(self, classes: Sequence[str], keep_images: int = 0) -> None:
        self.classes = tuple(classes)
        self.keep_images = keep_images
        #: Every image added, in order (with or without detections).
        self.image_ids: list[str] = []
        #: The first ``keep_images`` images' detections: numpy ``polygons``, ``scores``, ``classes``.
        self.kept: dict[str, dict[str, NDArray[Any]]] = {}
        self.num_detections = 0
        self._ids: list[list[str]] = [[] for _ in self.classes]
        self._scores: list[list[NDArray[np.float64]]] = [[] for _ in self.classes]
        self._polys: list[list[NDArray[np.float64]]] = [[] for _ in self.classes]

    def add(self, image_id: str, detections: Mapping[str, Any] | Any, scores: Any = None,
            classes: Any = None) -> None:
        """Record one image's detections: a detection dict (``polygons (N, 8)``, ``scores (N,)``,
        ``classes (N,)``, numpy or torch), or those three arrays as ``(polygons, scores, classes)``.

        Raises:
            ValueError: a class index outside the class list.
        """
        if scores is None:
            polygons, scores, classes = (detections[k] for k in ("polygons", "scores", "classes"))
        else:
            polygons = detections
        polys = _numpy(polygons).astype(np.float64).reshape(-1, 8)
        sc = _numpy(scores).astype(np.float64).reshape(-1)
        cls = _numpy(classes).astype(np.int64).reshape(-1)
        if cls.size and (cls.min() < 0 or cls.max() >= len(self.classes)):
            raise ValueError(f"{image_id}: class index out of range [0, {len(self.classes)})")
        self.image_ids.append(image_id)
        if len(self.kept) < self.keep_images:
            self.kept[image_id] = {"polygons": polys, "scores": sc, "classes": cls}
        for c in np.unique(cls):
            sel = cls == c
            self._ids[int(c)].extend([image_id] * int(sel.sum()))
            self._scores[int(c)].append(sc[sel])
            self._polys[int(c)].append(polys[sel])
        self.num_detections += int(sc.size)

    def result(self) -> dict[str, ClassDetections]:
        """``{class name: ClassDetections}`` for every class (empty ones included)."""
        out = {}
        for k, name in enumerate(self.classes):
            scores = np.concatenate(self._scores[k]) if self._scores[k] else np.zeros(0)
            polys = np.concatenate(self._polys[k]) if self._polys[k] else np.zeros((0, 8))
            out[name] = ClassDetections(list(self._ids[k]), scores, polys)
        return out


def _numpy(x: Any) -> NDArray[Any]:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass
class FilesRun:
    """What :func:`predict_image_files` did: the collector, and the unreadable images skipped."""

    collector: DetectionCollector
    unreadable: list[str] = field(default_factory=list)


def report_unreadable(item: dict[str, Any], unreadable: list[str]) -> None:
    unreadable.append(item["image_id"])
    logger.warning("skipped unreadable image %s (%d so far): %s", item["path"], len(unreadable),
                   item["error"])


def predict_image_files(
    predictor: Predictor,
    items: Sequence[tuple[str, Path]],
    workers: int = 0,
    progress: bool = False,
    on_image: OnImage | None = None,
    keep_originals: bool = False,
    keep_images: int = 0,
    desc: str = "images",
) -> FilesRun:
    """Letterbox each ``(image id, path)`` to the predictor's input, predict, collect.

    Args:
        workers: image-decoding loader workers (0 = in this process).
        on_image: called for every readable image after its prediction (pictures).
        keep_originals: hand ``on_image`` the decoded original image (else None).
        keep_images: detections of this many first images are kept in the collector (pictures).
    Returns:
        the collector (in ``items`` order, unreadable images left out) and the unreadable ids.
    """
    dataset = ImageFileDataset(items, predictor.input_size, keep_original=keep_originals)
    loader = DataLoader(dataset, batch_size=predictor.batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_patches, pin_memory=predictor.device.type == "cuda",
                        worker_init_fn=worker_init, prefetch_factor=2 if workers > 0 else None)
    run = FilesRun(DetectionCollector(predictor.classes, keep_images))
    bar = tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, leave=False)
    for batch in loader:
        for it in batch["errors"]:
            report_unreadable(it, run.unreadable)
        if batch["images"] is not None:
            results = predictor.predict_batch(batch["images"], batch["letterbox"])
            for image_id, original, dets in zip(batch["image_ids"], batch["originals"], results):
                dets = {k: v.cpu() for k, v in dets.items()}
                run.collector.add(image_id, dets)
                if on_image is not None:
                    on_image(image_id, None if original is None else original.numpy(), dets)
        bar.update(len(batch["image_ids"]) + len(batch["errors"]))
    bar.close()
    return run
