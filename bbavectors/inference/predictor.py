"""A trained CTRBOX with its preprocessing and decoding: images in, oriented detections out.

The geometry is the evaluation geometry of training (``bbavectors.data``): each image is
letterboxed to the config's ``input_size`` (:func:`~bbavectors.data.letterbox.letterbox_image`:
aspect kept, image at the top-left, zero padding right/bottom), travels to the device as uint8,
is normalised there with the config's mean/std (:func:`~bbavectors.data.letterbox.normalize_images`),
goes through the model under ``torch.inference_mode()`` (optionally bf16 autocast), and is decoded by
:func:`bbavectors.decode.decode_detections` (peaks, top-K, score threshold, per-class rotated NMS).
The letterbox is inverted in the decode, so detections are in **original image pixels**.

A detection set (:data:`Detections`) is a dict of tensors:
``{"polygons": (N, 8) float32, "scores": (N,) float32, "classes": (N,) int64}``.

Example::

    predictor = Predictor.from_checkpoint("runs/exp/best.pth", device="auto", batch_size=16)
    dets = predictor.predict_images([read_image("P0001__1__0___0.png")])[0]
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from ..checkpoint import CheckpointLoadError, model_from_checkpoint
from ..config import Config, DecodeConfig
from ..data.letterbox import letterbox_image, normalize_images
from ..runtime import resolve_device

__all__ = [
    "AMP_MODES",
    "Detections",
    "Predictor",
    "CheckpointLoadError",
    "resolve_device",
    "default_batch_size",
    "empty_detections",
    "concat_detections",
    "detections_to",
    "letterbox_tensor",
]

logger = logging.getLogger(__name__)

#: ``polygons`` (N, 8) float32, ``scores`` (N,) float32, ``classes`` (N,) int64.
Detections = dict[str, Tensor]

AMP_MODES: tuple[str, ...] = ("none", "bf16")


def default_batch_size(device: torch.device) -> int:
    """Images per model call when none is given: 16 on a GPU; 1 on a CPU, where larger batches were
    measured slower per image (resnet18 at 608 px, 2-core Xeon: 4.3 images/s at batch 1, 3.3 at 8;
    the stride-4 activations of a batch do not fit the caches)."""
    return 16 if device.type == "cuda" else 1


def empty_detections(device: torch.device | str = "cpu") -> Detections:
    """A detection set with no detections (shapes ``(0, 8)``, ``(0,)``, ``(0,)``)."""
    return {
        "polygons": torch.zeros(0, 8, dtype=torch.float32, device=device),
        "scores": torch.zeros(0, dtype=torch.float32, device=device),
        "classes": torch.zeros(0, dtype=torch.long, device=device),
    }


def concat_detections(parts: Sequence[Detections], device: torch.device | str = "cpu") -> Detections:
    """Concatenate detection sets (in order); an empty sequence gives :func:`empty_detections`."""
    if not parts:
        return empty_detections(device)
    return {k: torch.cat([p[k] for p in parts]) for k in ("polygons", "scores", "classes")}


def detections_to(dets: Detections, device: torch.device | str) -> Detections:
    """The same detections on ``device`` (polygons and scores float32, classes int64)."""
    return {
        "polygons": dets["polygons"].to(device=device, dtype=torch.float32),
        "scores": dets["scores"].to(device=device, dtype=torch.float32),
        "classes": dets["classes"].to(device=device, dtype=torch.long),
    }


class Predictor:
    """Model + preprocessing + decoding on one device.

    Args:
        model: CTRBOX-like module: ``forward((B, 3, H, W) float) -> {"hm", "wh", "reg", "cls_theta"}``
            logits at stride ``cfg.model.down_ratio``. Put in eval mode and moved to ``device`` here.
        cfg: the run's config (``data.input_size``, ``data.mean``/``std``, ``decode``, ``model.down_ratio``).
        classes: class names, index = heatmap channel.
        device: where the model runs (``"auto"``, ``"cpu"``, ``"cuda"``...).
        batch_size: images (or scene windows) per model call; None = :func:`default_batch_size`.
        amp: ``"none"`` (float32) or ``"bf16"`` (autocast; outputs are cast back to float32 before
            decoding). Works on any device; it pays off on GPUs.
        score_thresh: overrides ``cfg.decode.score_thresh`` when given.
        decode_nms_thresh: overrides ``cfg.decode.nms_thresh`` (per-image NMS) when given.
        channels_last: memory format of the model and inputs; default: on for CUDA.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: Config,
        classes: Sequence[str],
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        amp: str = "none",
        score_thresh: float | None = None,
        decode_nms_thresh: float | None = None,
        channels_last: bool | None = None,
    ) -> None:
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
        self.device = resolve_device(device)
        self.cfg = cfg
        self.classes: tuple[str, ...] = tuple(classes)
        self.batch_size = int(batch_size) if batch_size is not None else default_batch_size(self.device)
        self.amp = amp
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.decode_cfg: DecodeConfig = dataclasses.replace(cfg.decode)
        if score_thresh is not None:
            self.decode_cfg.score_thresh = float(score_thresh)
        if decode_nms_thresh is not None:
            self.decode_cfg.nms_thresh = float(decode_nms_thresh)
        model = model.to(self.device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    # ------------------------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        amp: str = "none",
        score_thresh: float | None = None,
        decode_nms_thresh: float | None = None,
    ) -> Predictor:
        """Rebuild the model stored in a checkpoint (EMA weights when present).

        Raises:
            CheckpointLoadError: no such file, or not a (compatible) bbavectors checkpoint.
        """
        path = Path(path)
        model, cfg, classes = model_from_checkpoint(path, device="cpu")
        logger.info("loaded %s: %s, %d classes, input %d", path, cfg.model.backbone, len(classes),
                    cfg.data.input_size)
        return cls(model, cfg, classes, device=device, batch_size=batch_size, amp=amp,
                   score_thresh=score_thresh, decode_nms_thresh=decode_nms_thresh)

    # ------------------------------------------------------------------------------- properties
    @property
    def input_size(self) -> int:
        """Side ``S`` of the square network input."""
        return int(self.cfg.data.input_size)

    @property
    def down_ratio(self) -> int:
        return int(self.cfg.model.down_ratio)

    # ------------------------------------------------------------------------------- steps
    def preprocess(self, image: NDArray[np.uint8]) -> tuple[Tensor, Tensor]:
        """Letterbox one ``(H, W, 3)`` uint8 RGB image (CPU; data-loader workers call this too).

        Returns:
            uint8 ``(3, S, S)`` tensor and float32 ``(3,)`` ``[scale, pad_x, pad_y]``.
        """
        return letterbox_tensor(image, self.input_size)

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Normalise uint8 RGB ``(B, 3, H, W)`` on the device and run the model.

        Returns:
            float32 logits ``{"hm": (B, C, h, w), "wh": (B, 10, h, w), "reg": (B, 2, h, w),
            "cls_theta": (B, 1, h, w)}``, ``h = ceil(H / 4)``.
        """
        with torch.inference_mode():
            x = normalize_images(images.to(self.device, non_blocking=True), self.cfg.data.mean,
                                 self.cfg.data.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                out = self.model(x)
            return {k: v.float() for k, v in out.items()}

    def decode(self, outputs: dict[str, Tensor], letterbox: Tensor | None = None) -> list[Detections]:
        """Batched decode (threshold, per-class NMS) on the outputs' device.

        Args:
            outputs: :meth:`forward`'s logits for ``B`` images.
            letterbox: ``(B, 3)`` ``[scale, pad_x, pad_y]`` to map back to original pixels, or None
                to stay in network-input pixels.
        Returns:
            ``B`` detection sets on the device.
        """
        from ..decode import decode_detections  # late import: keeps this module importable alone

        with torch.inference_mode():
            lb = None if letterbox is None else letterbox.to(self.device, torch.float32)
            dets = decode_detections(outputs, self.decode_cfg, down_ratio=self.down_ratio, letterbox=lb)
            return [detections_to(d, self.device) for d in dets]

    def predict_batch(self, images: Tensor, letterbox: Tensor | None = None) -> list[Detections]:
        """Model + decode for a uint8 batch ``(B, 3, H, W)`` (e.g. a loader's letterboxed batch).

        Returns:
            ``B`` detection sets on the device, in original pixels when ``letterbox`` ``(B, 3)`` is
            given.
        """
        return self.decode(self.forward(images), letterbox)

    def predict_images(self, images: Sequence[NDArray[np.uint8]]) -> list[Detections]:
        """Detections for ``(H, W, 3)`` uint8 RGB images of any sizes, in original image pixels.

        Images are letterboxed on the CPU and run ``batch_size`` at a time.

        Returns:
            one detection set per image, on the CPU.
        """
        results: list[Detections] = []
        for chunk in _chunks(list(images), self.batch_size):
            prepared = [self.preprocess(_check_image(im, i)) for i, im in enumerate(chunk)]
            batch = torch.stack([p[0] for p in prepared])
            letterbox = torch.stack([p[1] for p in prepared])
            results.extend(detections_to(d, "cpu") for d in self.predict_batch(batch, letterbox))
        return results


def letterbox_tensor(image: NDArray[np.uint8], size: int) -> tuple[Tensor, Tensor]:
    """:func:`~bbavectors.data.letterbox.letterbox_image` as tensors.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
    Returns:
        uint8 ``(3, S, S)`` and float32 ``(3,)`` ``[scale, pad_x, pad_y]``.
    """
    canvas, params = letterbox_image(image, size)
    return torch.from_numpy(canvas).permute(2, 0, 1).contiguous(), params.as_tensor()


def _check_image(image: NDArray[np.uint8], index: int) -> NDArray[np.uint8]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image {index}: expected (H, W, 3) uint8 RGB, got shape {shape} dtype {dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index}: empty image of shape {image.shape}")
    return image


def _chunks(items: list[NDArray[np.uint8]], size: int) -> Iterator[list[NDArray[np.uint8]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
