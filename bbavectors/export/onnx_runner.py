"""Run an exported model with onnxruntime: NumPy + OpenCV only at runtime (no torch import).

Preprocessing is the training one, re-implemented in a few NumPy lines (tested pixel-equal to
:func:`bbavectors.data.letterbox.letterbox_image`):

1. **Colour order RGB.** ``predict(image)`` takes RGB by default; pass ``bgr=True`` for arrays
   from ``cv2.imread``. (The fork's TensorRT code fed RGB to a model trained on BGR; here the
   order the model expects is written in the ONNX metadata, ``bbavectors.color_order``.)
2. **Letterbox top-left:** ``scale = min(S / h, S / w)``, resize (INTER_AREA when shrinking,
   INTER_LINEAR when enlarging), paste at the top-left of a black ``S x S`` canvas.
3. **Normalisation** ``(x / 255 - mean) / std`` with mean/std from the metadata (the checkpoint's
   config), inside the graph (uint8 input) or here (float32 input), as the metadata says.

Post-processing: score threshold, per-class rotated NMS (``DOTA_devkit.geometry``, shapely) unless
the graph already holds it, then the letterbox inverse ``x = (x' - pad_x) / scale`` to the
ORIGINAL image's pixels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from DOTA_devkit.geometry import rotated_nms_per_class

from ..cpu_cores import usable_cores

__all__ = ["OnnxModelInfo", "OnnxDetector", "letterbox_numpy", "read_onnx_metadata", "create_session",
           "OPTIMIZATION_LEVELS", "usable_cores"]

logger = logging.getLogger(__name__)

#: Format tag of our ONNX files (``bbavectors.format``); the exporter imports it from here.
ONNX_FORMAT = "bbavectors-onnx-1"


def letterbox_numpy(image: NDArray[np.uint8], size: int) -> tuple[NDArray[np.uint8], float]:
    """``(H, W, 3)`` uint8 -> ``(size, size, 3)`` canvas with the image at the top-left, and the scale.

    Same arithmetic as ``bbavectors.data.letterbox.letterbox_image`` (pad value 0).
    """
    h, w = image.shape[:2]
    if h <= 0 or w <= 0:
        raise ValueError(f"empty image ({h}x{w})")
    scale = min(size / h, size / w)
    nw = max(1, min(size, round(w * scale)))
    nh = max(1, min(size, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=interp)
    canvas = np.zeros((size, size, image.shape[2]), dtype=np.uint8)
    canvas[:nh, :nw] = resized
    return canvas, float(scale)


#: Fields of :class:`OnnxModelInfo` stored as plain strings; every other field is stored as JSON.
_RAW_FIELDS = frozenset({"input_dtype", "color_order", "exporter", "version", "letterbox"})


@dataclass(frozen=True)
class OnnxModelInfo:
    """What the runner needs to know about an exported model: the ONNX ``metadata_props``, defined
    once here (the exporter writes :meth:`to_metadata`, the runner reads :meth:`from_metadata`).
    Keys are ``bbavectors.<field>``, plus ``bbavectors.format`` and the optional ``bbavectors.config``."""

    input_size: int
    input_dtype: str  # "uint8" (normalised inside) | "float32" (normalise before)
    color_order: str
    normalize_inside: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...]
    top_k: int
    cls_theta_thresh: float
    score_thresh: float
    nms_thresh: float
    nms_in_graph: bool
    opset: int
    exporter: str
    dynamic: str
    letterbox: str = "top-left"
    down_ratio: int = 4  # bbavectors.config.DOWN_RATIO (this runner imports neither torch nor the package)
    version: str = ""
    #: The graph decodes rotated boxes as rectangles (``decode.rectangles``; older files: False).
    rectangles: bool = False
    #: The calibrated centre shift inside the graph (``decode.centre_shift``; older files: none).
    centre_shift: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def metadata_keys(cls) -> tuple[str, ...]:
        """Every key :meth:`to_metadata` writes, ``bbavectors.format`` first."""
        return ("bbavectors.format", *(f"bbavectors.{f.name}" for f in fields(cls)))

    def to_metadata(self) -> dict[str, str]:
        """``{"bbavectors.<field>": value}`` as ONNX ``metadata_props`` strings."""
        meta = {"bbavectors.format": ONNX_FORMAT}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            meta[f"bbavectors.{f.name}"] = str(value) if f.name in _RAW_FIELDS else json.dumps(value)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "<onnx>") -> OnnxModelInfo:
        """Parse ``metadata_props``. Raises ValueError for files without our format tag or keys."""
        if meta.get("bbavectors.format") != ONNX_FORMAT:
            raise ValueError(f"{source} was not exported by bbavectors.export (no {ONNX_FORMAT!r} metadata)")
        values: dict[str, Any] = {}
        for f in fields(cls):
            full = f"bbavectors.{f.name}"
            if full not in meta:
                if f.default is not MISSING:
                    continue
                raise ValueError(f"{source}: metadata key {full!r} missing")
            raw = meta[full]
            try:
                values[f.name] = raw if f.name in _RAW_FIELDS else json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(f"{source}: metadata key {full!r} is not valid JSON: {raw!r}") from e
        values["mean"] = tuple(float(v) for v in values["mean"])
        values["std"] = tuple(float(v) for v in values["std"])
        values["classes"] = tuple(str(c) for c in values["classes"])
        for name in ("input_size", "top_k", "opset", "down_ratio"):
            if name in values:
                values[name] = int(values[name])
        for name in ("cls_theta_thresh", "score_thresh", "nms_thresh"):
            values[name] = float(values[name])
        values["dynamic"] = str(values["dynamic"])
        if "rectangles" in values:
            values["rectangles"] = bool(values["rectangles"])
        if "centre_shift" in values:
            shift = values["centre_shift"]
            if not isinstance(shift, list) or len(shift) != 2:
                raise ValueError(f"{source}: metadata key 'bbavectors.centre_shift' must be [dx, dy], "
                                 f"got {shift!r}")
            values["centre_shift"] = (float(shift[0]), float(shift[1]))
        return cls(**values)


#: onnxruntime graph optimisation levels by name.
OPTIMIZATION_LEVELS: tuple[str, ...] = ("none", "basic", "extended", "all")


def create_session(
    path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None,
    optimization: str = "all",
) -> Any:
    """An onnxruntime session for ``path``.

    Args:
        providers: execution providers (default: all available, e.g. CUDA then CPU).
        threads: intra-op threads (default: the cores this process may use; onnxruntime's own
            default counts every core of the machine, also those a container does not give us).
        optimization: one of :data:`OPTIMIZATION_LEVELS` (default ``"all"``: every graph fusion).
    Raises:
        FileNotFoundError: no such file; ValueError: unknown optimisation level or not an ONNX file.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("onnxruntime is needed to run exported models: pip install 'bbavectors[export]'") \
            from e
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization must be one of {OPTIMIZATION_LEVELS}, got {optimization!r}")
    levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = levels[optimization]
    options.intra_op_num_threads = threads if threads is not None else usable_cores()
    chosen = list(providers) if providers else ort.get_available_providers()
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path} is not a loadable ONNX model: {reason}") from e


def _session(path: Path, providers: Sequence[str] | None) -> Any:
    return create_session(path, providers)


def read_onnx_metadata(path: str | Path) -> OnnxModelInfo:
    """The :class:`OnnxModelInfo` of an exported file (raises for files without our metadata)."""
    session = _session(Path(path), ["CPUExecutionProvider"])
    return OnnxModelInfo.from_metadata(dict(session.get_modelmeta().custom_metadata_map), str(path))


class OnnxDetector:
    """Detect oriented objects with an exported model; results in original image pixels.

    Args:
        path: ``.onnx`` written by :func:`bbavectors.export.onnx_export.export_onnx`.
        providers: onnxruntime execution providers (default: all available, e.g. CUDA then CPU).
        score_thresh, nms_thresh: override the metadata's defaults (``nms_thresh <= 0``: no NMS
            in the runner; NMS already in the graph is not undone).
        input_size: letterbox side (default the metadata's; the graph accepts any size when its
            height/width are dynamic).

    Example::

        det = OnnxDetector("model.onnx")
        out = det.predict(cv2.imread("P0001.png"), bgr=True)
        out["polygons"]  # (N, 8) float64, out["scores"] (N,), out["classes"] (N,) int64
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        score_thresh: float | None = None,
        nms_thresh: float | None = None,
        input_size: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.session = _session(self.path, providers)
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.info = OnnxModelInfo.from_metadata(meta, str(self.path))
        if self.info.color_order != "RGB":
            raise ValueError(f"{self.path}: unsupported colour order {self.info.color_order!r}")
        self.score_thresh = self.info.score_thresh if score_thresh is None else float(score_thresh)
        self.nms_thresh = self.info.nms_thresh if nms_thresh is None else float(nms_thresh)
        self.input_size = int(input_size or self.info.input_size)
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        fixed = [d for d in shape[2:] if isinstance(d, int)]
        if fixed and self.input_size not in fixed:
            raise ValueError(f"{self.path}: the graph's input is fixed to {shape}, not {self.input_size}")
        self._fixed_batch = shape[0] if isinstance(shape[0], int) else None
        mean = np.asarray(self.info.mean, dtype=np.float32).reshape(1, 3, 1, 1) * 255.0
        std = np.asarray(self.info.std, dtype=np.float32).reshape(1, 3, 1, 1) * 255.0
        self._mean, self._std = mean, std

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    # -------------------------------------------------------------------------- preprocessing
    def preprocess(
        self, images: Sequence[NDArray[np.uint8]], bgr: bool = False
    ) -> tuple[NDArray[Any], list[float]]:
        """Letterbox and stack: ``(B, 3, S, S)`` uint8 (or normalised float32) and the scales."""
        canvases, scales = [], []
        for i, image in enumerate(images):
            image = self._as_rgb(image, bgr, f"image {i}")
            canvas, scale = letterbox_numpy(image, self.input_size)
            canvases.append(canvas.transpose(2, 0, 1))
            scales.append(scale)
        batch = np.ascontiguousarray(np.stack(canvases))
        if self.info.normalize_inside:
            return batch, scales
        return ((batch.astype(np.float32) - self._mean) / self._std).astype(np.float32), scales

    @staticmethod
    def _as_rgb(image: NDArray[Any], bgr: bool, what: str) -> NDArray[np.uint8]:
        a = np.asarray(image)
        if a.dtype != np.uint8:
            raise TypeError(f"{what}: expected uint8 pixels, got {a.dtype}")
        if a.ndim == 2:
            return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
        if a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) == 0:
            raise ValueError(f"{what}: expected an (H, W, 3) or (H, W) image, got shape {a.shape}")
        return np.ascontiguousarray(a[:, :, ::-1]) if bgr else a

    # ------------------------------------------------------------------------------ inference
    def run_raw(
        self, batch: NDArray[Any]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
        """The graph's outputs for a preprocessed batch: ``(B, K, 8)``, ``(B, K)``, ``(B, K)``."""
        fixed = self._fixed_batch
        if fixed is not None and batch.shape[0] != fixed:
            # A static graph: run chunks of its batch size, the last one padded with blank images.
            parts = []
            for start in range(0, batch.shape[0], fixed):
                chunk = batch[start:start + fixed]
                pad = np.zeros((fixed - chunk.shape[0], *chunk.shape[1:]), dtype=chunk.dtype)
                out = self.run_raw(np.concatenate([chunk, pad]))
                parts.append(tuple(o[:chunk.shape[0]] for o in out))
            return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                    np.concatenate([p[2] for p in parts]))
        polygons, scores, classes = self.session.run(None, {self.input_name: batch})
        return polygons, scores, classes.astype(np.int64)

    def postprocess(
        self, polygons: NDArray[np.float32], scores: NDArray[np.float32], classes: NDArray[np.int64],
        scale: float,
    ) -> dict[str, NDArray[Any]]:
        """One image's ``(K, 8)``, ``(K,)``, ``(K,)`` -> threshold, NMS, original pixels."""
        keep = scores > max(self.score_thresh, 0.0)  # in-graph NMS marks suppressed boxes with 0
        p = polygons[keep].astype(np.float64)
        s = scores[keep].astype(np.float64)
        c = classes[keep].astype(np.int64)
        if not self.info.nms_in_graph and self.nms_thresh > 0 and len(s):
            idx = rotated_nms_per_class(p, s, c, self.nms_thresh)
            p, s, c = p[idx], s[idx], c[idx]
        order = np.argsort(-s, kind="stable")
        return {"polygons": p[order] / scale, "scores": s[order], "classes": c[order]}

    def predict_batch(
        self, images: Sequence[NDArray[np.uint8]], bgr: bool = False
    ) -> list[dict[str, NDArray[Any]]]:
        """Detections for each image: dicts ``polygons (N, 8)``, ``scores (N,)``, ``classes (N,)``."""
        if not images:
            return []
        batch, scales = self.preprocess(images, bgr)
        polygons, scores, classes = self.run_raw(batch)
        return [self.postprocess(polygons[i], scores[i], classes[i], scales[i]) for i in range(len(scales))]

    def predict(self, image: NDArray[np.uint8], bgr: bool = False) -> dict[str, NDArray[Any]]:
        """Detections of one ``(H, W, 3)`` uint8 image (RGB, or BGR with ``bgr=True``)."""
        return self.predict_batch([image], bgr)[0]
