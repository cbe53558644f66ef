"""Check an exported model against PyTorch: largest difference of boxes and scores.

Two comparisons:

* **graph vs graph** (:func:`compare_graph_outputs`): the same input batch through
  ``ExportWrapper`` in PyTorch and through onnxruntime; the raw top-K outputs are compared.
* **end to end** (:func:`compare_runner`): :class:`~bbavectors.export.onnx_runner.OnnxDetector`
  (the torch-free runner) on an image vs the PyTorch
  :class:`~bbavectors.inference.predictor.Predictor` (letterbox, normalise, model, decode with the
  letterbox inverse: the path of validation and ``tools/test.py``), both in original image pixels.

Why matching and not position-by-position: with untrained weights many heatmap peaks have almost
equal scores, and a difference of 1e-7 between the two runtimes can swap their top-K order (or
which one is the K-th). :func:`compare_detections` pairs detections one to one (same class, then
nearest polygon and score, greedily) and reports the largest differences over the pairs; a
detection may stay unmatched only if its score is within ``tie_eps`` of a cut-off (the K-th
score, or the score threshold), where the two sides may legitimately disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..config import DOWN_RATIO, Config, DecodeConfig
from ..inference.predictor import Predictor
from .onnx_export import ExportWrapper
from .onnx_runner import OnnxDetector

__all__ = [
    "ExportCheck",
    "compare_detections",
    "compare_graph_outputs",
    "compare_runner",
    "reference_predictor",
    "check_export",
]

logger = logging.getLogger(__name__)


@dataclass
class ExportCheck:
    """Largest differences between two sets of detections (over matched pairs).

    ``max_box_diff``: max absolute corner-coordinate difference (pixels); ``max_score_diff``: max
    absolute score difference; ``unmatched``: detections without a partner away from any cut-off
    (should be 0); ``num_matched``: pairs compared.
    """

    name: str
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    num_matched: int = 0
    unmatched: int = 0
    notes: list[str] = field(default_factory=list)

    def merge(self, other: ExportCheck) -> ExportCheck:
        return ExportCheck(
            self.name,
            max(self.max_box_diff, other.max_box_diff),
            max(self.max_score_diff, other.max_score_diff),
            self.num_matched + other.num_matched,
            self.unmatched + other.unmatched,
            self.notes + other.notes,
        )

    def ok(self, box_tol: float = 1e-2, score_tol: float = 1e-4) -> bool:
        return self.unmatched == 0 and self.max_box_diff <= box_tol and self.max_score_diff <= score_tol

    def format(self) -> str:
        return (f"{self.name}: {self.num_matched} detections matched, max |box diff| "
                f"{self.max_box_diff:.3g} px, max |score diff| {self.max_score_diff:.3g}, "
                f"unmatched {self.unmatched}")


def compare_detections(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    name: str = "detections",
    cutoff: float | None = None,
    tie_eps: float = 1e-4,
    score_weight: float = 1e3,
) -> ExportCheck:
    """Match two detection sets of one image and report their largest differences.

    Args:
        a, b: dicts ``polygons (N, 8)``, ``scores (N,)``, ``classes (N,)`` (numpy or torch).
        cutoff: score below which detections were dropped on either side (score threshold);
            the lowest kept score of each side is a cut-off too (top-K).
        tie_eps: detections within this of a cut-off may stay unmatched.
        score_weight: weight of the score difference in the matching cost (pixels per unit score).
    """
    pa, sa, ca = (_np(a[k]) for k in ("polygons", "scores", "classes"))
    pb, sb, cb = (_np(b[k]) for k in ("polygons", "scores", "classes"))
    pa, pb = pa.reshape(-1, 8).astype(np.float64), pb.reshape(-1, 8).astype(np.float64)
    sa, sb = sa.reshape(-1).astype(np.float64), sb.reshape(-1).astype(np.float64)
    ca, cb = ca.reshape(-1).astype(np.int64), cb.reshape(-1).astype(np.int64)
    result = ExportCheck(name)
    if len(sa) and len(sb):
        box = np.abs(pa[:, None, :] - pb[None, :, :]).max(-1)
        score = np.abs(sa[:, None] - sb[None, :])
        cost = np.where(ca[:, None] == cb[None, :], box + score_weight * score, np.inf)
        used_a = np.zeros(len(sa), dtype=bool)
        used_b = np.zeros(len(sb), dtype=bool)
        for flat in np.argsort(cost, axis=None, kind="stable"):
            i, j = divmod(int(flat), len(sb))
            if not np.isfinite(cost[i, j]):
                break
            if used_a[i] or used_b[j]:
                continue
            used_a[i] = used_b[j] = True
            result.num_matched += 1
            result.max_box_diff = max(result.max_box_diff, float(box[i, j]))
            result.max_score_diff = max(result.max_score_diff, float(score[i, j]))
    else:
        used_a, used_b = np.zeros(len(sa), dtype=bool), np.zeros(len(sb), dtype=bool)
    cutoffs = [x for x in (cutoff, sa.min() if len(sa) else None, sb.min() if len(sb) else None)
               if x is not None]

    def near_cutoff(s: float) -> bool:
        return any(abs(s - c) <= tie_eps for c in cutoffs)

    for side, scores, used in (("first", sa, used_a), ("second", sb, used_b)):
        for s in scores[~used]:
            if not near_cutoff(float(s)):
                result.unmatched += 1
                result.notes.append(f"{name}: {side} side has an unmatched detection of score {s:.6f}")
    return result


def _np(x: Any) -> NDArray[Any]:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def compare_graph_outputs(
    wrapper: ExportWrapper, onnx_path: str | Path, images: torch.Tensor, name: str = "graph",
    tie_eps: float = 1e-4,
) -> ExportCheck:
    """Run ``images`` (the graph's input: uint8 or normalised float ``(B, 3, H, W)``) through the
    PyTorch wrapper and through onnxruntime (CPU) and compare the raw top-K outputs per image."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wrapper.eval()
    device = next(wrapper.parameters()).device
    with torch.no_grad():
        tp, ts, tc = wrapper(images.to(device))
    op, os_, oc = session.run(None, {session.get_inputs()[0].name: images.cpu().numpy()})
    if op.shape != tuple(tp.shape) or os_.shape != tuple(ts.shape):
        raise AssertionError(f"{name}: ONNX output shapes {op.shape}, {os_.shape} differ from PyTorch "
                             f"{tuple(tp.shape)}, {tuple(ts.shape)}")
    check = ExportCheck(name)
    for i in range(images.shape[0]):
        # In-graph NMS zeroes suppressed scores: those are not detections.
        onnx_keep, torch_keep = os_[i] > 0, _np(ts[i]) > 0
        a = {"polygons": op[i][onnx_keep], "scores": os_[i][onnx_keep], "classes": oc[i][onnx_keep]}
        b = {"polygons": _np(tp[i])[torch_keep], "scores": _np(ts[i])[torch_keep],
             "classes": _np(tc[i])[torch_keep]}
        check = check.merge(compare_detections(a, b, f"{name}[{i}]", tie_eps=tie_eps))
    return check


def reference_predictor(model: nn.Module, detector: OnnxDetector) -> Predictor:
    """The PyTorch :class:`~bbavectors.inference.predictor.Predictor` (the path validation and
    ``tools/test.py`` use) with an exported file's input size, normalisation and decode settings,
    on the model's device."""
    info = detector.info
    cfg = Config()
    cfg.data.input_size = detector.input_size
    cfg.data.mean, cfg.data.std = info.mean, info.std
    cfg.decode = DecodeConfig(top_k=info.top_k, score_thresh=detector.score_thresh,
                              cls_theta_thresh=info.cls_theta_thresh, rectangles=info.rectangles,
                              centre_shift=info.centre_shift,
                              nms_thresh=detector.nms_thresh)
    device = next(model.parameters()).device
    return Predictor(model, cfg, info.classes, device=device, batch_size=1, channels_last=False)


def compare_runner(
    model: nn.Module, detector: OnnxDetector, image: NDArray[np.uint8], name: str = "image",
    tie_eps: float = 1e-4,
) -> ExportCheck:
    """``detector.predict(image)`` vs the PyTorch :class:`Predictor` with the detector's settings."""
    reference = reference_predictor(model, detector).predict_images([image])[0]
    return compare_detections(detector.predict(image), reference, name,
                              cutoff=detector.score_thresh, tie_eps=tie_eps)


def check_export(
    model: nn.Module,
    onnx_path: str | Path,
    images: Sequence[NDArray[np.uint8]] = (),
    image_names: Sequence[str] | None = None,
    num_random: int = 2,
    random_size: int | None = None,
    seed: int = 0,
) -> list[ExportCheck]:
    """Compare an exported file with ``model``: random inputs (graph vs graph, batch ``num_random``)
    and each given RGB image (graph vs graph on its letterboxed canvas, and runner vs PyTorch).

    Returns one :class:`ExportCheck` per comparison (print them with ``.format()``).
    """
    detector = OnnxDetector(onnx_path, providers=["CPUExecutionProvider"])
    info = detector.info
    wrapper = ExportWrapper(
        model, info.top_k, info.cls_theta_thresh,
        info.mean if info.normalize_inside else None, info.std if info.normalize_inside else None,
        int(getattr(model, "down_ratio", DOWN_RATIO)), info.nms_thresh if info.nms_in_graph else None,
        rectangles=info.rectangles, centre_shift=info.centre_shift,
    )
    size = random_size or info.input_size
    results = []
    if num_random > 0:
        gen = torch.Generator().manual_seed(seed)
        shape = (num_random, 3, size, size)
        batch = (torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen) if info.normalize_inside
                 else torch.randn(shape, generator=gen))
        results.append(compare_graph_outputs(wrapper, onnx_path, batch, f"random input {tuple(shape)}"))
    names = list(image_names) if image_names is not None else [f"image {i}" for i in range(len(images))]
    for image, name in zip(images, names):
        canvas, _ = detector.preprocess([image])
        results.append(compare_graph_outputs(wrapper, onnx_path, torch.from_numpy(canvas), f"{name} (graph)"))
        results.append(compare_runner(model, detector, image, f"{name} (runner vs PyTorch)"))
    for r in results:
        logger.info(r.format())
    return results
