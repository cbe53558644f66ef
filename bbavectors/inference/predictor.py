"""A trained CTRBOX with its preprocessing and decoding: images in, oriented detections out.

The geometry is the evaluation geometry of training (``bbavectors.data``): each image is
letterboxed to the config's ``input_size`` (:func:`~bbavectors.data.letterbox.letterbox_image`:
aspect kept, image at the top-left, zero padding right/bottom), travels to the device as uint8,
is normalised there with the config's mean/std (:func:`~bbavectors.data.letterbox.normalize_images`),
goes through the model under ``torch.inference_mode()`` (optionally bf16 / fp16 autocast; the
model's batch norms folded into its convolutions, channels-last memory), and is
decoded: :func:`bbavectors.decode.decode_topk` (peaks, top-K) then
:func:`bbavectors.decode.select_detections` (letterbox inverse, score threshold, per-class rotated
NMS), so detections are in **original image pixels**.

This is the one path from image to detections: validation (:mod:`bbavectors.engine.validate`),
``tools/test.py`` (:mod:`.runner`), whole scenes (:mod:`.scenes`), pictures
(:func:`bbavectors.visualize.visualize_checkpoint`), the export check and the benchmarks all call a
:class:`Predictor`. Its backend is a PyTorch module, or an exported ONNX graph run by onnxruntime
(:class:`OnnxBackend`, :meth:`Predictor.from_onnx`): the graph ends with ``decode_topk``, and its
top-K outputs go through the same ``select_detections``.

A detection set (:data:`Detections`) is a dict of tensors:
``{"polygons": (N, 8) float32, "scores": (N,) float32, "classes": (N,) int64}``.

Example::

    predictor = Predictor.from_checkpoint("runs/exp/best.pt", device="auto", batch_size=16)
    dets = predictor.predict_images([read_image("P0001__1__0___0.png")])[0]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from ..checkpoint import CheckpointLoadError, model_from_checkpoint
from ..config import Config, DecodeConfig, config_from_dict
from ..data.letterbox import letterbox_image, normalize_images
from ..decode import decode_detections, decode_topk, select_detections
from ..models.fusion import count_batch_norms, fuse_conv_bn
from ..runtime import AMP_MODES, INFERENCE_AMP_MODES, autocast_context, resolve_device, resolve_inference_amp
from .tta import apply_view, check_grid, merge_view_outputs, views_for

__all__ = [
    "AMP_MODES",
    "INFERENCE_AMP_MODES",
    "AMP_DTYPES",
    "Detections",
    "OnnxBackend",
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

#: Autocast dtype of each of :data:`bbavectors.runtime.AMP_MODES` (inference has no GradScaler, so
#: fp16 is plain autocast; it pays off on GPUs only).
AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_mode_of(dtype: torch.dtype | None) -> str:
    """The AMP mode name of an autocast dtype (``None`` -> ``"none"``)."""
    for mode, d in AMP_DTYPES.items():
        if d == dtype:
            return mode
    raise ValueError(f"no AMP mode for dtype {dtype}")


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


class OnnxBackend:
    """An exported graph (:func:`bbavectors.export.onnx_export.export_onnx`, decoder inside) in an
    onnxruntime CPU session: letterboxed uint8 ``(B, 3, S, S)`` -> the graph's top-K outputs.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: the cores this process may use).
        optimization: onnxruntime graph optimisation level: ``"all"`` (default), ``"extended"``,
            ``"basic"`` or ``"none"``.

    Raises:
        FileNotFoundError: no such file; ValueError: not a bbavectors export.
    """

    def __init__(self, path: str | Path, threads: int | None = None, optimization: str = "all") -> None:
        from ..export.onnx_runner import OnnxModelInfo, create_session

        self.path = Path(path)
        self.session = create_session(self.path, ["CPUExecutionProvider"], threads=threads,
                                      optimization=optimization)
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.info = OnnxModelInfo.from_metadata(meta, str(self.path))
        self.metadata = meta
        self.input_name = self.session.get_inputs()[0].name

    def run(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 ``(B, 3, S, S)`` -> ``polygons (B, K, 8)``, ``scores (B, K)``, ``classes (B, K)``
        in network-input pixels (CPU tensors)."""
        x = images.cpu()
        if not self.info.normalize_inside:
            x = normalize_images(x, self.info.mean, self.info.std)
        polygons, scores, classes = self.session.run(None, {self.input_name: x.numpy()})
        return torch.from_numpy(polygons), torch.from_numpy(scores), torch.from_numpy(classes).long()

    def config(self) -> Config:
        """The run's config stored at export (``bbavectors.config``), with the graph's settings."""
        info = self.info
        stored = self.metadata.get("bbavectors.config")
        cfg = config_from_dict(json.loads(stored)) if stored else Config()
        cfg.data.input_size = info.input_size
        cfg.data.mean, cfg.data.std = info.mean, info.std
        cfg.decode.top_k = info.top_k
        cfg.decode.cls_theta_thresh = info.cls_theta_thresh
        cfg.decode.rectangles = info.rectangles
        cfg.decode.centre_shift = info.centre_shift
        cfg.decode.score_thresh = info.score_thresh
        cfg.decode.nms_thresh = info.nms_thresh
        return cfg


class Predictor:
    """Model (PyTorch module or ONNX graph) + preprocessing + decoding on one device.

    Args:
        model: CTRBOX-like module: ``forward((B, 3, H, W) float) -> {"hm", "wh", "reg", "cls_theta"}``
            (and ``"angle"`` with the angle head) logits at stride ``cfg.model.down_ratio``. Put in eval
            mode and moved to ``device`` here.
            Or an :class:`OnnxBackend` (CPU, float32).
        cfg: the run's config (``data.input_size``, ``data.mean``/``std``, ``decode``, ``model.down_ratio``).
        classes: class names, index = heatmap channel.
        device: where the model runs (``"auto"``, ``"cpu"``, ``"cuda"``...).
        batch_size: images (or scene windows) per model call; None = :func:`default_batch_size`.
        amp: one of :data:`bbavectors.runtime.INFERENCE_AMP_MODES`: ``"none"`` (float32), ``"bf16"``
            or ``"fp16"`` (autocast; outputs are cast back to float32 before decoding), or ``"auto"``:
            bf16 where the CPU or GPU computes it natively, else float32
            (:func:`~bbavectors.runtime.resolve_inference_amp`). bf16 on a CPU without native bf16
            falls back to float32 (emulated bf16 is slower). ONNX backends run in float32 (``"none"``
            or ``"auto"`` only).
        score_thresh: overrides ``cfg.decode.score_thresh`` when given.
        decode_nms_thresh: overrides ``cfg.decode.nms_thresh`` (per-image NMS) when given.
        rectangles: overrides ``cfg.decode.rectangles`` when given (PyTorch models; an exported graph
            decodes as it was exported).
        centre_shift: overrides ``cfg.decode.centre_shift`` (the training's centre calibration, input
            pixels) when given; PyTorch models only, like ``rectangles``.
        channels_last: memory format of the model and inputs; default: on (faster on GPUs and, with
            oneDNN, on CPUs: 1.22x per image in float32 on a 2-core CPU, docs/inference.md "CPU
            defaults").
        fuse_batch_norm: run a copy of the model with its batch norms folded into the convolutions
            before them (:func:`~bbavectors.models.fusion.fuse_conv_bn`: same outputs up to float
            rounding, another 1.07x there); the model passed in is not changed (without batch
            norms it is the model that runs).
        tta: test-time augmentation, one of :data:`~bbavectors.inference.tta.TTA_MODES`: ``"none"``
            (default), ``"flips"`` (4 views) or ``"dihedral"`` (8): the model runs on flipped and
            turned copies of each input, whose outputs are averaged on the original grid before
            the decode (:mod:`bbavectors.inference.tta`); that many times the model's time.
            PyTorch models only.

    The decoder's grid offset is the model's own ``grid_offset`` (CTRBOX carries it), else
    ``cfg.model.grid_offset``: the outputs are decoded on the grid the network was built with.
    """

    def __init__(
        self,
        model: nn.Module | OnnxBackend,
        cfg: Config,
        classes: Sequence[str],
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        amp: str = "none",
        score_thresh: float | None = None,
        decode_nms_thresh: float | None = None,
        channels_last: bool | None = None,
        rectangles: bool | None = None,
        centre_shift: tuple[float, float] | None = None,
        fuse_batch_norm: bool = True,
        tta: str = "none",
    ) -> None:
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if amp not in INFERENCE_AMP_MODES:
            raise ValueError(f"amp must be one of {INFERENCE_AMP_MODES}, got {amp!r}")
        self.onnx = model if isinstance(model, OnnxBackend) else None
        #: The views the model runs on (one, the identity, without test-time augmentation).
        self.views = views_for(tta)
        self.tta = tta
        if self.onnx is not None:
            if tta != "none":
                raise ValueError(f"tta={tta!r} applies to PyTorch models; an exported graph runs its "
                                 "input as it is")
            if amp not in ("none", "auto"):
                raise ValueError(f"amp {amp!r} applies to PyTorch models; an ONNX model runs in float32")
            if rectangles is not None and rectangles != self.onnx.info.rectangles:
                raise ValueError(f"rectangles={rectangles} differs from the exported graph's decoder "
                                 f"({self.onnx.info.rectangles}): export again with the setting wanted")
            if centre_shift is not None and tuple(centre_shift) != self.onnx.info.centre_shift:
                raise ValueError(f"centre_shift={tuple(centre_shift)} differs from the exported graph's "
                                 f"({self.onnx.info.centre_shift}): export again with the setting wanted")
            device = "cpu"
        self.device = resolve_device(device)
        self.cfg = cfg
        self.classes: tuple[str, ...] = tuple(classes)
        self.batch_size = int(batch_size) if batch_size is not None else default_batch_size(self.device)
        self.amp = amp
        #: The autocast dtype ``amp`` resolves to on this device (None: float32).
        self.amp_dtype: torch.dtype | None = None if self.onnx is not None else resolve_inference_amp(
            amp, self.device)
        self.channels_last = True if channels_last is None else bool(channels_last)
        self.decode_cfg: DecodeConfig = dataclasses.replace(cfg.decode)
        if score_thresh is not None:
            self.decode_cfg.score_thresh = float(score_thresh)
        if decode_nms_thresh is not None:
            self.decode_cfg.nms_thresh = float(decode_nms_thresh)
        if rectangles is not None:
            self.decode_cfg.rectangles = bool(rectangles)
        if centre_shift is not None:
            if len(centre_shift) != 2 or not all(math.isfinite(float(v)) for v in centre_shift):
                raise ValueError(f"centre_shift must be two finite numbers (dx, dy), got {centre_shift!r}")
            self.decode_cfg.centre_shift = (float(centre_shift[0]), float(centre_shift[1]))
        self.model: nn.Module | None = None
        #: Parameters of the model as passed in (before batch-norm folding); 0 for an ONNX graph.
        self.num_parameters = (sum(p.numel() for p in model.parameters()) if isinstance(model, nn.Module)
                               else 0)
        self.grid_offset = float(getattr(model, "grid_offset", cfg.model.grid_offset))
        if len(self.views) > 1:
            check_grid(self.grid_offset, self.down_ratio)  # at construction, not at the first batch
        if isinstance(model, nn.Module):
            model = model.to(self.device).eval()
            if fuse_batch_norm and count_batch_norms(model):
                model = fuse_conv_bn(model)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
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
        rectangles: bool | None = None,
        centre_shift: tuple[float, float] | None = None,
        channels_last: bool | None = None,
        fuse_batch_norm: bool = True,
        tta: str = "none",
    ) -> Predictor:
        """Rebuild the model stored in a checkpoint (EMA weights when present); the arguments are
        :class:`Predictor`'s.

        Raises:
            CheckpointLoadError: no such file, or not a (compatible) bbavectors checkpoint.
        """
        path = Path(path)
        model, cfg, classes = model_from_checkpoint(path, device="cpu")
        logger.info("loaded %s: %s, %d classes, input %d", path, cfg.model.backbone, len(classes),
                    cfg.data.input_size)
        return cls(model, cfg, classes, device=device, batch_size=batch_size, amp=amp,
                   score_thresh=score_thresh, decode_nms_thresh=decode_nms_thresh, rectangles=rectangles,
                   centre_shift=centre_shift, channels_last=channels_last, fuse_batch_norm=fuse_batch_norm,
                   tta=tta)

    @classmethod
    def from_onnx(
        cls,
        path: str | Path,
        batch_size: int | None = None,
        score_thresh: float | None = None,
        decode_nms_thresh: float | None = None,
        threads: int | None = None,
        optimization: str = "all",
    ) -> Predictor:
        """A predictor whose model is an exported graph run by onnxruntime on the CPU; its config,
        classes and decode settings come from the file's metadata (see :class:`OnnxBackend`).

        Raises:
            FileNotFoundError: no such file; ValueError: not a bbavectors export.
        """
        backend = OnnxBackend(path, threads=threads, optimization=optimization)
        logger.info("loaded %s: ONNX opset %d, %d classes, input %d, top-K %d", path, backend.info.opset,
                    len(backend.info.classes), backend.info.input_size, backend.info.top_k)
        return cls(backend, backend.config(), backend.info.classes, device="cpu", batch_size=batch_size,
                   score_thresh=score_thresh, decode_nms_thresh=decode_nms_thresh)

    # ------------------------------------------------------------------------------- properties
    @property
    def input_size(self) -> int:
        """Side ``S`` of the square network input."""
        return int(self.cfg.data.input_size)

    @property
    def down_ratio(self) -> int:
        return int(self.cfg.model.down_ratio)

    @property
    def backend_name(self) -> str:
        """``"pytorch"`` or ``"onnxruntime"``."""
        return "onnxruntime" if self.onnx is not None else "pytorch"

    # ------------------------------------------------------------------------------- steps
    def preprocess(self, image: NDArray[np.uint8]) -> tuple[Tensor, Tensor]:
        """Letterbox one ``(H, W, 3)`` uint8 RGB image (CPU; data-loader workers call this too).

        Returns:
            uint8 ``(3, S, S)`` tensor and float32 ``(3,)`` ``[scale, pad_x, pad_y]``.
        """
        return letterbox_tensor(image, self.input_size)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Normalise uint8 RGB ``(B, 3, H, W)`` on the device and run the PyTorch model.

        With test-time augmentation (``tta``) the model runs once on all the views of the batch
        (``views x B`` images) and returns the views' merged outputs
        (:func:`~bbavectors.inference.tta.merge_view_outputs`).

        Returns:
            float32 logits ``{"hm": (B, C, h, w), "wh": (B, 10, h, w), "reg": (B, 2, h, w),
            "cls_theta": (B, 1, h, w)}`` (and ``"angle": (B, 2, h, w)`` with the angle head),
            ``h = ceil(H / 4)``.
        Raises:
            TypeError: the backend is an ONNX graph (its outputs are decoded already).
            ValueError: test-time augmentation on a non-square input or one whose side is not a
                multiple of the output stride.
        """
        if self.model is None:
            raise TypeError("an ONNX predictor has no logits: its graph ends with the decoder")
        batch = images.shape[0]
        augmented = len(self.views) > 1
        if augmented and (images.shape[-1] != images.shape[-2] or images.shape[-1] % self.down_ratio):
            raise ValueError(f"tta={self.tta!r} needs square inputs whose side is a multiple of "
                             f"{self.down_ratio}, got {tuple(images.shape[-2:])}")
        with torch.inference_mode():
            images = images.to(self.device, non_blocking=True)
            if augmented:  # the views are made on the device: one upload per image
                images = torch.cat([apply_view(images, view) for view in self.views])
            x = normalize_images(images, self.cfg.data.mean, self.cfg.data.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(self.device, self.amp_dtype):
                out = self.model(x)
            out = {k: v.float() for k, v in out.items()}
            if not augmented:
                return out
            per_view = [{k: v[i * batch:(i + 1) * batch] for k, v in out.items()}
                        for i in range(len(self.views))]
            return merge_view_outputs(per_view, self.views, self.down_ratio, self.grid_offset)

    def topk(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The model's ``top_k`` best peaks: uint8 ``(B, 3, H, W)`` -> ``polygons (B, K, 8)`` in
        network-input pixels, ``scores (B, K)``, ``classes (B, K)`` (either backend)."""
        if self.onnx is not None:
            return self.onnx.run(images)
        with torch.inference_mode():
            return decode_topk(self.forward(images), self.decode_cfg.top_k, self.decode_cfg.cls_theta_thresh,
                               self.down_ratio, rectangles=self.decode_cfg.rectangles,
                               grid_offset=self.grid_offset, centre_shift=self.decode_cfg.centre_shift)

    def decode(self, outputs: dict[str, Tensor], letterbox: Tensor | None = None) -> list[Detections]:
        """Batched decode of PyTorch logits (threshold, per-class NMS) on the outputs' device.

        Args:
            outputs: :meth:`forward`'s logits for ``B`` images.
            letterbox: ``(B, 3)`` ``[scale, pad_x, pad_y]`` to map back to original pixels, or None
                to stay in network-input pixels.
        Returns:
            ``B`` detection sets on the device.
        """
        with torch.inference_mode():
            lb = None if letterbox is None else letterbox.to(self.device, torch.float32)
            dets = decode_detections(outputs, self.decode_cfg, down_ratio=self.down_ratio, letterbox=lb,
                                     grid_offset=self.grid_offset)
            return [detections_to(d, self.device) for d in dets]

    def predict_batch(self, images: Tensor, letterbox: Tensor | None = None) -> list[Detections]:
        """Model + decode for a uint8 batch ``(B, 3, H, W)`` (e.g. a loader's letterboxed batch).

        Returns:
            ``B`` detection sets on the device, in original pixels when ``letterbox`` ``(B, 3)`` is
            given.
        """
        polygons, scores, classes = self.topk(images)
        with torch.inference_mode():
            lb = None if letterbox is None else letterbox.to(polygons.device, torch.float32)
            dets = select_detections(polygons, scores, classes, self.decode_cfg, lb)
            return [detections_to(d, self.device) for d in dets]

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
