"""Whole-scene inference: sliding windows cut on the fly, batched, decoded, shifted, merged.

A DOTA scene (often 4000 x 4000 px or larger) is far bigger than the network input. The original
pipeline splits it into patch files on disk, runs each patch at batch 1 and merges the text results.
Here nothing is written in between:

1. For each rate ``r`` in ``rates`` the scene is resized by ``r`` (``cv2.INTER_CUBIC``, as
   :mod:`DOTA_devkit.split` does; ``r = 1`` uses the image as is) and uploaded **once** to the
   device as a uint8 ``(3, H, W)`` view (no float copy of the scene).
2. Windows of ``subsize`` px with ``gap`` px overlap come from
   :func:`DOTA_devkit.split.sliding_windows`, the same positions as the split tool, so
   ``--scenes`` and "split, then test the patches, then merge" see the same pixels. Each window is
   a slice of the device scene copied into a ``(B, 3, subsize, subsize)`` uint8 batch that is
   zero elsewhere: windows at the right/bottom border are **padded with 0**, as split patches are.
3. A batch goes through :meth:`Predictor.predict_batch` (normalisation on the device, model or
   ONNX graph, one batched decode; when ``subsize`` differs from the model's ``input_size``, the
   batch is first resized bilinearly with antialiasing, the GPU counterpart of the letterbox of a
   square patch). Each window's per-class rotated NMS happens inside that decode,
   in window coordinates, exactly as for a patch file of the split tool.
4. Each window's detections are mapped to the scene with ``x = (x' / s + left) / r``
   (``s = input_size / subsize``): DOTA_devkit's merge formula ``(patch coordinate + left) / rate``.
5. All windows' (and rates') detections are merged with a per-class rotated NMS
   (:func:`bbavectors.geometry.rotated_nms` class by class, on the device), IoU threshold
   ``nms_thresh`` (0.1, DOTA_devkit's merge value; ``<= 0`` keeps everything): an object seen by two
   overlapping windows, or cut by one window's border and whole in the next, becomes one detection.

So the result equals "predict every window separately, shift, then merge with
:func:`DOTA_devkit.merge.merge_detections`" (tested, also against the split tool's patch files of a
real DOTA scene). An ``(H, W, 3)`` uint8 scene of 4000 x 4000 px is 48 MB on the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.nn import functional as F

from DOTA_devkit.split import sliding_windows

from ..geometry import rotated_nms
from .predictor import Detections, Predictor, concat_detections

__all__ = [
    "SceneSettings",
    "Window",
    "scene_windows",
    "resize_scene",
    "scene_to_tensor",
    "cut_windows",
    "window_to_scene",
    "merge_detections_nms",
    "predict_windows",
    "predict_scene",
    "DOTA_MERGE_NMS_THRESH",
]

#: DOTA_devkit's merge threshold (its ResultMerge uses 0.1 for polygons).
DOTA_MERGE_NMS_THRESH = 0.1


@dataclass(frozen=True)
class SceneSettings:
    """How a scene is cut and merged.

    Attributes:
        subsize: window side in pixels of the (resized) scene.
        gap: overlap of neighbouring windows in pixels (``stride = subsize - gap``).
        rates: scene scale factors; several give multi-scale testing (e.g. ``(0.5, 1.0)``).
        nms_thresh: IoU of the per-class rotated NMS across windows; ``<= 0`` keeps everything.
        window_batch: windows per model call; None = the predictor's batch size.
    """

    subsize: int = 608
    gap: int = 100
    rates: tuple[float, ...] = (1.0,)
    nms_thresh: float = DOTA_MERGE_NMS_THRESH
    window_batch: int | None = None

    def __post_init__(self) -> None:
        if self.subsize <= 0:
            raise ValueError(f"subsize must be positive, got {self.subsize}")
        if not 0 <= self.gap < self.subsize:
            raise ValueError(f"gap must be in [0, subsize), got gap {self.gap} for subsize {self.subsize}")
        if not self.rates or any(not (r > 0 and math.isfinite(r)) for r in self.rates):
            raise ValueError(f"rates must be positive numbers, got {self.rates}")
        if self.window_batch is not None and self.window_batch <= 0:
            raise ValueError(f"window_batch must be positive, got {self.window_batch}")


@dataclass(frozen=True)
class Window:
    """One window of a (resized) scene: its top-left ``(left, up)`` in the resized scene, the size
    of its part inside the scene (``width``, ``height`` <= subsize; the rest is padding) and the rate."""

    rate: float
    left: int
    up: int
    width: int
    height: int


def scene_windows(height: int, width: int, subsize: int, gap: int, rate: float = 1.0) -> list[Window]:
    """Windows of a ``height x width`` (already resized) scene, in the split tool's order."""
    return [
        Window(rate, int(left), int(up), min(subsize, width - int(left)), min(subsize, height - int(up)))
        for left, up in sliding_windows(height, width, subsize, gap)
    ]


def resize_scene(image: NDArray[np.uint8], rate: float) -> NDArray[np.uint8]:
    """``(H, W, 3)`` -> ``(round(H r), round(W r), 3)`` with ``cv2.INTER_CUBIC`` (the split tool's
    resize); ``rate == 1`` returns the image itself."""
    if rate == 1.0:
        return image
    resized = cv2.resize(image, None, fx=rate, fy=rate, interpolation=cv2.INTER_CUBIC)
    return np.asarray(resized, dtype=np.uint8)


def scene_to_tensor(image: NDArray[np.uint8] | Tensor, device: torch.device) -> Tensor:
    """Upload an ``(H, W, 3)`` uint8 scene once; returns a ``(3, H, W)`` view on ``device``.

    A CPU tensor that is pinned is copied asynchronously. No float copy is made: windows are cut
    from the uint8 scene and converted per batch.
    """
    t = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if t.dtype != torch.uint8 or t.ndim != 3 or t.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 scene, got {tuple(t.shape)} {t.dtype}")
    return t.to(device, non_blocking=True).permute(2, 0, 1)


def cut_windows(scene: Tensor, windows: Sequence[Window], subsize: int) -> Tensor:
    """Copy windows of a ``(3, H, W)`` uint8 scene into a zero-padded ``(B, 3, subsize, subsize)`` batch
    on the scene's device (one slice copy per window; nothing else is allocated)."""
    batch = torch.zeros(len(windows), 3, subsize, subsize, dtype=scene.dtype, device=scene.device)
    for i, w in enumerate(windows):
        batch[i, :, : w.height, : w.width] = scene[:, w.up : w.up + w.height, w.left : w.left + w.width]
    return batch


def window_to_scene(polygons: Tensor, window: Window, input_scale: float) -> Tensor:
    """``(N, 8)`` polygons in a window's network-input pixels -> original scene pixels:
    ``x = (x' / s + left) / rate`` (``s`` = ``input_scale``, network pixels per resized-scene pixel)."""
    offset = polygons.new_tensor([window.left, window.up]).repeat(4)
    return (polygons / input_scale + offset) / window.rate


def merge_detections_nms(dets: Detections, nms_thresh: float) -> Detections:
    """Per-class rotated NMS over detections of one scene (any device); sorted by decreasing score.

    Classes are suppressed one at a time (:func:`bbavectors.geometry.rotated_nms` on each), as
    DOTA_devkit's merge does: the pairwise IoU matrix of a class is much smaller than that of all
    detections, and no coordinate offset trick perturbs the IoUs of far-away scene coordinates.
    """
    scores = dets["scores"]
    if nms_thresh > 0 and scores.numel() > 0:
        kept = [idx[rotated_nms(dets["polygons"][idx], scores[idx], nms_thresh)]
                for idx in (torch.nonzero(dets["classes"] == c).flatten() for c in dets["classes"].unique())]
        keep = torch.cat(kept)
    else:
        keep = torch.arange(scores.numel(), device=scores.device)
    order = keep[torch.argsort(scores[keep], descending=True, stable=True)]
    return {k: v[order] for k, v in dets.items()}


def _resize_batch(batch: Tensor, size: int) -> Tensor:
    """uint8 ``(B, 3, s, s)`` -> uint8 ``(B, 3, size, size)`` (bilinear, antialiased when shrinking)."""
    if batch.shape[-1] == size:
        return batch
    x = F.interpolate(batch.float(), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=size < batch.shape[-1])
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _batches(items: Sequence[Window], size: int) -> Iterator[Sequence[Window]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_windows(predictor: Predictor, scene: Tensor, windows: Sequence[Window], subsize: int,
                    window_batch: int) -> list[Detections]:
    """Detections of each window (its own per-class NMS), already in original-scene pixels.

    Args:
        scene: ``(3, H, W)`` uint8 on the predictor's device, resized by the windows' rate.
    Returns:
        one detection set per window, on the device.
    """
    input_scale = predictor.input_size / subsize
    out: list[Detections] = []
    for chunk in _batches(windows, window_batch):
        batch = _resize_batch(cut_windows(scene, chunk, subsize), predictor.input_size)
        # Decoded (and NMS'd) in window coordinates, as a patch file would be, then moved to the scene.
        for window, dets in zip(chunk, predictor.predict_batch(batch)):
            out.append({**dets, "polygons": window_to_scene(dets["polygons"], window, input_scale)})
    return out


def predict_scene(
    predictor: Predictor, image: NDArray[np.uint8] | Tensor, settings: SceneSettings | None = None
) -> Detections:
    """Detect objects in a whole scene of any size (module docstring).

    Args:
        image: ``(H, W, 3)`` uint8 RGB scene, a numpy array or a CPU tensor (e.g. pinned by a loader;
            uploaded as is at rate 1).
        settings: windows, rates and merge threshold (default :class:`SceneSettings`).
    Returns:
        merged detections in scene pixels, on the predictor's device, sorted by decreasing score.
    """
    settings = settings or SceneSettings()
    is_uint8 = image.dtype in (np.uint8, torch.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or not is_uint8 or 0 in tuple(image.shape[:2]):
        raise ValueError(f"expected a non-empty (H, W, 3) uint8 scene, got {tuple(image.shape)} "
                         f"{image.dtype}")
    window_batch = settings.window_batch or predictor.batch_size
    parts: list[Detections] = []
    for rate in settings.rates:
        if rate == 1.0:
            scaled: NDArray[np.uint8] | Tensor = image
        else:
            scaled = resize_scene(image.numpy() if isinstance(image, Tensor) else image, rate)
        h, w = int(scaled.shape[0]), int(scaled.shape[1])
        windows = scene_windows(h, w, settings.subsize, settings.gap, rate)
        scene = scene_to_tensor(scaled, predictor.device)
        parts.extend(predict_windows(predictor, scene, windows, settings.subsize, window_batch))
    with torch.inference_mode():
        return merge_detections_nms(concat_detections(parts, predictor.device), settings.nms_thresh)
