"""ONNX export of CTRBOX **with the decoder inside**, through the public ``torch.onnx.export`` only.

The exported graph (:class:`ExportWrapper`)::

    images (B, 3, H, W) uint8 RGB            letterboxed like training (top-left, zero padding)
      -> (x - 255 * mean) / (255 * std)      optional (``normalize_inside``; else float32 input)
      -> zero-pad right/bottom to a multiple of 32, CTRBOX, crop to ceil(H/4) x ceil(W/4)
      -> bbavectors.decode.decode_topk       sigmoid, 3x3 max-pool peaks, top-K, vectors -> corners,
                                             cls_theta switch
      -> optional exact rotated NMS          (``with_nms``) suppressed scores set to 0
    outputs: polygons (B, K, 8) float32  corners in NETWORK-INPUT pixels (undo the letterbox outside)
             scores   (B, K)    float32  sigmoid heatmap peak, sorted high to low
             classes  (B, K)    int64    class index

Shapes are static given ``(B, H, W)``: no threshold, no data-dependent sizes, so the graph runs
unchanged in onnxruntime and TensorRT. The score threshold and the letterbox inverse are the
caller's (:class:`bbavectors.export.onnx_runner.OnnxDetector` does both).

Exporter: the dynamo-based one (``torch.onnx.export(..., dynamo=True)``, the default of torch 2.14,
needs ``onnxscript``): it traces symbolic shapes, so batch, height and width are all dynamic (the
TorchScript exporter bakes the shape arithmetic of the 32-padding into constants, so with it only
the batch is dynamic; it stays available with ``dynamo=False``). The fork's export crashed by
calling a private torch API; this module uses only ``torch.onnx.export`` (a test greps for it).

Dynamic height/width: CTRBOX pads inputs to a multiple of 32 inside ``forward`` with a Python
``if`` on the shape, which an exporter would freeze. The wrapper pads first (with two ``cat``s of
zeros, which also keeps the graph convertible to opset 17, unlike ``F.pad`` whose opset-18 ``Pad``
has no down-converter), so CTRBOX always sees multiples of 32 and its ``if`` is provably false for
every size, then crops the outputs back. The result equals CTRBOX on the unpadded input exactly.

NMS (``with_nms``): an exact greedy per-class rotated NMS built from static-shape ops: the
pairwise IoU of all K candidates (convex quadrilateral clipping, Sutherland-Hodgman with a
cumulative-sum compaction instead of a sort) and K - 1 unrolled fixed-point sweeps
``keep = not any(keep[j] and suppresses(j, i))``; after sweep t the first t + 1 decisions are
final, so K - 1 sweeps reproduce the sequential greedy result. Cost: K^2 IoUs and K^2 work per
sweep, i.e. O(K^3) (K = 100: about 1e6, negligible on a GPU). Without it (the default) the runner
applies the NumPy/shapely per-class rotated NMS of ``DOTA_devkit.geometry`` after thresholding.

Metadata (ONNX ``metadata_props``, read by the runner): ``bbavectors.*`` keys listed in
:data:`METADATA_KEYS` (input size, colour order, mean/std, class names, decode settings...).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from ..config import DOWN_RATIO
from ..decode import decode_topk
from ..geometry import normalize_corner_order, shoelace_area
from .onnx_runner import ONNX_FORMAT, OnnxModelInfo

__all__ = [
    "ExportWrapper",
    "export_onnx",
    "export_checkpoint",
    "graph_rotated_nms",
    "quad_iou_static",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "METADATA_KEYS",
    "ONNX_FORMAT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAMES: tuple[str, str, str] = ("polygons", "scores", "classes")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Every metadata key written into the ONNX file (values are strings; lists/floats as JSON): the
#: fields of :class:`~bbavectors.export.onnx_runner.OnnxModelInfo`, and the training config.
METADATA_KEYS: tuple[str, ...] = (*OnnxModelInfo.metadata_keys(), "bbavectors.config")


# ----------------------------------------------------------------------------------------------
# Exportable rotated IoU and NMS (static shapes, no sort, no nonzero)
# ----------------------------------------------------------------------------------------------
def _clip_by_edge(pts: Tensor, valid: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Clip convex polygons ``(P, V, 2)`` (valid vertices first) by the half-plane on the inner side
    of the clockwise edge ``a -> b`` (``(P, 2)`` each). Returns ``(P, V + 1, 2)`` and its valid mask.

    The same clipping as :func:`bbavectors.geometry.poly_iou_pairwise` (whose area and corner-order
    helpers this module reuses), except for one step that must differ: the geometry module compacts
    the emitted vertices with a stable ``argsort``, which does not export to ONNX; here their slots
    come from a cumulative sum and a one-hot matrix product, static shapes only.
    """
    num_vertices = pts.shape[1]
    n = valid.sum(1, keepdim=True)
    k = torch.arange(num_vertices, device=pts.device).unsqueeze(0)
    nxt = torch.where(k + 1 < n, k + 1, torch.zeros_like(k))
    q = pts.gather(1, nxt.unsqueeze(-1).expand(-1, -1, 2))
    edge = (b - a).unsqueeze(1)

    def side(x: Tensor) -> Tensor:
        d = x - a.unsqueeze(1)
        return edge[..., 0] * d[..., 1] - edge[..., 1] * d[..., 0]

    sp, sq = side(pts), side(q)
    inside_p, inside_q = sp >= 0, sq >= 0
    denom = sp - sq
    safe = denom.abs() > 1e-12
    t = torch.where(safe, sp / torch.where(safe, denom, torch.ones_like(denom)), torch.zeros_like(denom))
    crossing = pts + t.unsqueeze(-1) * (q - pts)
    emit = torch.stack([valid & inside_p, valid & (inside_p != inside_q)], dim=2).flatten(1, 2)
    cand = torch.stack([pts, crossing], dim=2).flatten(1, 2)  # (P, 2V, 2)
    slot = torch.cumsum(emit.to(torch.int64), dim=1) - 1
    slots = torch.arange(num_vertices + 1, device=pts.device).view(1, 1, -1)
    onehot = ((slot.unsqueeze(-1) == slots) & emit.unsqueeze(-1)).to(pts.dtype)  # (P, 2V, V+1)
    out = torch.matmul(onehot.transpose(1, 2), cand)
    count = emit.sum(1, keepdim=True)
    return out, slots.view(1, -1) < count


def quad_iou_static(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of convex quadrilaterals with ONNX-exportable, static-shape ops.

    Args:
        a, b: ``(P, 8)`` corners in any direction.
    Returns:
        ``(P,)`` IoU in ``[0, 1]``; degenerate quads give 0.
    """
    pa = normalize_corner_order(a.reshape(-1, 8).float()).reshape(-1, 4, 2)
    pb = normalize_corner_order(b.reshape(-1, 8).float()).reshape(-1, 4, 2)
    full = torch.ones(pa.shape[:2], dtype=torch.bool, device=pa.device)
    pts, valid = pa, full
    for i in range(4):
        pts, valid = _clip_by_edge(pts, valid, pb[:, i], pb[:, (i + 1) % 4])
    inter = shoelace_area(pts, valid).abs()
    union = shoelace_area(pa, full).abs() + shoelace_area(pb, full).abs() - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))
    return iou.clamp(0.0, 1.0)


def graph_rotated_nms(
    polygons: Tensor, scores: Tensor, classes: Tensor, iou_thresh: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact greedy per-class rotated NMS with static shapes (exportable; no loop over data).

    Args:
        polygons: ``(B, K, 8)``; scores: ``(B, K)``; classes: ``(B, K)`` integer.
        iou_thresh: a later box is suppressed by a kept earlier one of its class when IoU > this.
    Returns:
        ``(polygons, scores, classes)`` sorted by decreasing score, suppressed scores set to 0.
    """
    b, k = scores.shape
    scores, order = torch.topk(scores, k, dim=1)
    polygons = polygons.gather(1, order.unsqueeze(-1).expand(-1, -1, 8))
    classes = classes.gather(1, order)
    left = polygons.unsqueeze(2).expand(b, k, k, 8).reshape(-1, 8)
    right = polygons.unsqueeze(1).expand(b, k, k, 8).reshape(-1, 8)
    iou = quad_iou_static(left, right).reshape(b, k, k)
    later = torch.ones(k, k, dtype=torch.bool, device=scores.device).triu(1)
    suppresses = (iou > iou_thresh) & (classes.unsqueeze(2) == classes.unsqueeze(1)) & later
    sup = suppresses.to(scores.dtype)
    keep = torch.ones_like(scores)
    # keep[i] depends only on keep[j < i]: each sweep fixes one more position, K - 1 sweeps suffice.
    for _ in range(k - 1):
        hits = torch.matmul(keep.unsqueeze(1), sup).squeeze(1)
        keep = (hits < 0.5).to(scores.dtype)
    return polygons, scores * keep, classes


# ----------------------------------------------------------------------------------------------
# The exported module
# ----------------------------------------------------------------------------------------------
class ExportWrapper(nn.Module):
    """CTRBOX + (optional) normalisation + ``decode_topk`` (+ optional NMS) as one graph.

    Args:
        model: CTRBOX (any module returning the four head logits; ``size_divisor`` read if present).
        top_k: detections per image (static).
        cls_theta_thresh: sigmoid(cls_theta) above which the vectors are used.
        mean, std: RGB in ``[0, 1]``; given -> input is uint8 ``(B, 3, H, W)`` normalised inside;
            None -> input is already-normalised float32.
        down_ratio: output stride of the heads.
        nms_thresh: None = no NMS in the graph; else the IoU threshold of :func:`graph_rotated_nms`.
        rectangles: rotated boxes decoded as rectangles (``decode.rectangles``, see ``decode_topk``).
        grid_offset: the model's grid offset (``decode_topk``); None reads ``model.grid_offset``
            (0 when the model has none).
        centre_shift: the calibrated ``(dx, dy)`` added to every centre (``decode.centre_shift``).

    ``forward(images)`` -> ``(polygons (B, K, 8) float32, scores (B, K), classes (B, K) int64)``,
    polygons in input pixels (``decode_topk`` pads with score-0 entries when the map has fewer peaks).
    """

    pixel_mean: Tensor
    pixel_std: Tensor

    def __init__(
        self,
        model: nn.Module,
        top_k: int = 100,
        cls_theta_thresh: float = 0.5,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        down_ratio: int = DOWN_RATIO,
        nms_thresh: float | None = None,
        rectangles: bool = False,
        grid_offset: float | None = None,
        centre_shift: Sequence[float] = (0.0, 0.0),
    ) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (normalisation inside) or neither")
        self.model = model
        self.top_k = int(top_k)
        self.cls_theta_thresh = float(cls_theta_thresh)
        self.rectangles = bool(rectangles)
        self.down_ratio = int(down_ratio)
        self.grid_offset = float(getattr(model, "grid_offset", 0.0) if grid_offset is None else grid_offset)
        if len(centre_shift) != 2:
            raise ValueError(f"centre_shift must be (dx, dy), got {centre_shift!r}")
        self.centre_shift = (float(centre_shift[0]), float(centre_shift[1]))
        self.size_divisor = int(getattr(model, "size_divisor", 32))
        self.nms_thresh = None if nms_thresh is None else float(nms_thresh)
        self.normalize_inside = mean is not None
        if mean is not None and std is not None and (len(mean) != 3 or len(std) != 3 or min(std) <= 0):
            raise ValueError(f"mean/std must be 3 values with std > 0, got {mean}, {std}")
        # Pixel units (0..255): the graph takes uint8 images as the data pipeline yields them.
        pixel_mean = [255.0 * m for m in (mean or (0.0, 0.0, 0.0))]
        pixel_std = [255.0 * v for v in (std or (1 / 255,) * 3)]
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1))

    def _pad_to_divisor(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        pad_h = (self.size_divisor - h % self.size_divisor) % self.size_divisor
        pad_w = (self.size_divisor - w % self.size_divisor) % self.size_divisor
        # cat, not F.pad: opset-17 friendly and exact zeros (the mean colour after normalisation).
        x = torch.cat([x, x.new_zeros((b, c, h, pad_w))], dim=3)
        return torch.cat([x, x.new_zeros((b, c, pad_h, w + pad_w))], dim=2)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = images.float()
        if self.normalize_inside:
            x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2], x.shape[-1]
        out_h = (h + self.down_ratio - 1) // self.down_ratio
        out_w = (w + self.down_ratio - 1) // self.down_ratio
        outputs = self.model(self._pad_to_divisor(x))
        outputs = {name: v[:, :, :out_h, :out_w] for name, v in outputs.items()}
        polygons, scores, classes = decode_topk(outputs, self.top_k, self.cls_theta_thresh, self.down_ratio,
                                                self.rectangles, self.grid_offset, self.centre_shift)
        polygons, classes = polygons.float(), classes.to(torch.int64)
        if self.nms_thresh is not None:
            polygons, scores, classes = graph_rotated_nms(polygons, scores, classes, self.nms_thresh)
        return polygons, scores, classes


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------
def _dynamic_shapes(dynamic: bool) -> dict[str, Any] | None:
    if not dynamic:
        return None
    dim = torch.export.Dim
    # Named dims make torch.export fail loudly if anything specialises them (never silently).
    return {"images": {0: dim("batch", min=1, max=1024), 2: dim("height", min=32, max=16384),
                       3: dim("width", min=32, max=16384)}}


def _run_exporter(
    wrapper: ExportWrapper, example: Tensor, path: Path, opset: int, dynamic: bool, dynamo: bool
) -> None:
    common: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                  opset_version=opset, dynamo=dynamo)
    if dynamo:
        torch.onnx.export(wrapper, (example,), str(path), verbose=False, external_data=False,
                          dynamic_shapes=_dynamic_shapes(dynamic), **common)
    else:
        # TorchScript tracing freezes the shape arithmetic of the 32-padding: only batch is dynamic.
        axes = {n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic else None
        torch.onnx.export(wrapper, (example,), str(path), dynamic_axes=axes, **common)


def _graph_opset(model: Any) -> int:
    return max((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), default=-1)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: int = 608,
    top_k: int = 100,
    cls_theta_thresh: float = 0.5,
    opset: int = 17,
    dynamic: bool = True,
    with_nms: bool = False,
    *,
    nms_thresh: float = 0.1,
    score_thresh: float = 0.1,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    normalize_inside: bool = True,
    classes: Sequence[str] | None = None,
    batch_size: int | None = None,
    dynamo: bool = True,
    extra_metadata: Mapping[str, str] | None = None,
    rectangles: bool = False,
    centre_shift: Sequence[float] = (0.0, 0.0),
) -> Path:
    """Export ``model`` + decoder to ``path`` (atomic write) and return the path.

    Args:
        model: CTRBOX (kept on its device; put in eval mode for the export, mode restored after).
        input_size: side of the example input and the runner's letterbox size (metadata).
        top_k, cls_theta_thresh, rectangles, centre_shift: decoding inside the graph (see
            :class:`ExportWrapper`).
        opset: ONNX opset (>= 17). The dynamo exporter builds opset 18 and converts down; a model
            that cannot be converted is kept at its own opset (logged, and written in the metadata).
        dynamic: batch, height and width dynamic (dynamo) / batch only (``dynamo=False``);
            False fixes ``(batch_size, 3, input_size, input_size)``.
        with_nms: put the exact rotated NMS in the graph (:func:`graph_rotated_nms`, ``nms_thresh``);
            otherwise the runner applies ``DOTA_devkit`` NMS with ``nms_thresh`` from the metadata.
        score_thresh: the runner's default threshold (metadata only; the graph has none).
        mean, std, normalize_inside: True -> input uint8 RGB, normalised in the graph; False ->
            input float32 already normalised with mean/std (both stored in the metadata).
        classes: class names for the metadata (default ``class_0 ...``).
        batch_size: example batch; default 2 when dynamic (with 1 the tracer would specialise the
            batch to 1), 1 when static (the fixed batch of the graph).
        dynamo: exporter choice (module docstring).
        extra_metadata: more ``metadata_props`` (e.g. the training config as JSON).
    """
    import onnx  # local: onnx is an optional dependency (extra "export")

    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    if input_size < 32:
        raise ValueError(f"input_size must be >= 32, got {input_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_classes = int(getattr(model, "num_classes", 0)) or None
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {num_classes} classes")
    down_ratio = int(getattr(model, "down_ratio", DOWN_RATIO))
    # Restore each submodule's own mode afterwards (a frozen part may be in eval inside a training model).
    modes = [(m, m.training) for m in model.modules()]
    with_nms = with_nms and nms_thresh > 0  # DecodeConfig's convention: <= 0 disables NMS
    wrapper = ExportWrapper(
        model, top_k, cls_theta_thresh,
        mean if normalize_inside else None, std if normalize_inside else None,
        down_ratio, nms_thresh if with_nms else None, rectangles=rectangles, centre_shift=centre_shift,
    )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    wrapper.to(device).eval()
    if batch_size is None:
        batch_size = 2 if dynamic else 1
    if dynamic and batch_size < 2:
        raise ValueError("a dynamic export needs an example batch >= 2 (1 would be frozen into the graph)")
    shape = (batch_size, 3, input_size, input_size)
    generator = torch.Generator().manual_seed(0)
    if normalize_inside:
        example = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)
    else:
        example = torch.randn(shape, generator=generator).to(device)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad():
            _run_exporter(wrapper, example, tmp, opset, dynamic, dynamo)
        proto = onnx.load(str(tmp))
    finally:
        for module, mode in modes:
            module.training = mode
        tmp.unlink(missing_ok=True)
    actual_opset = _graph_opset(proto)
    if actual_opset != opset:
        logger.warning("requested opset %d, the exported graph has opset %d", opset, actual_opset)
    names = list(classes) if classes is not None else [f"class_{i}" for i in range(num_classes or 0)]
    info = OnnxModelInfo(
        input_size=int(input_size),
        input_dtype="uint8" if normalize_inside else "float32",
        color_order="RGB",
        normalize_inside=bool(normalize_inside),
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        classes=tuple(names),
        top_k=int(top_k),
        cls_theta_thresh=float(cls_theta_thresh),
        rectangles=bool(rectangles),
        centre_shift=wrapper.centre_shift,
        score_thresh=float(score_thresh),
        nms_thresh=float(nms_thresh),
        nms_in_graph=bool(with_nms),
        opset=actual_opset,
        exporter="dynamo" if dynamo else "torchscript",
        dynamic="batch,height,width" if dynamic and dynamo else "batch" if dynamic else "none",
        letterbox="top-left",
        down_ratio=down_ratio,
        version=__version__,
    )
    meta = {**info.to_metadata(), **dict(extra_metadata or {})}
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    try:
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("exported %s (opset %d, %s exporter, top_k %d, NMS %s, dynamic %s)", path, actual_opset,
                info.exporter, top_k, "in graph" if with_nms else "in the runner", info.dynamic)
    return path


def export_checkpoint(
    checkpoint: str | Path,
    path: str | Path,
    input_size: int | None = None,
    top_k: int = 100,
    opset: int = 17,
    with_nms: bool = False,
    dynamic: bool = True,
    device: str | torch.device = "cpu",
    dynamo: bool = True,
    normalize_inside: bool = True,
    rectangles: bool | None = None,
) -> Path:
    """Export a training checkpoint: mean/std, classes and decode settings come from its config.

    ``input_size`` None takes the config's ``data.input_size``, ``rectangles`` None its
    ``decode.rectangles``; other arguments as :func:`export_onnx`.
    """
    from ..checkpoint import model_from_checkpoint
    from ..config import config_to_dict

    model, cfg, classes = model_from_checkpoint(checkpoint, device)
    return export_onnx(
        model, path,
        input_size=input_size or cfg.data.input_size,
        top_k=top_k,
        cls_theta_thresh=cfg.decode.cls_theta_thresh,
        rectangles=cfg.decode.rectangles if rectangles is None else rectangles,
        centre_shift=cfg.decode.centre_shift,
        opset=opset,
        dynamic=dynamic,
        with_nms=with_nms,
        nms_thresh=cfg.decode.nms_thresh,
        score_thresh=cfg.decode.score_thresh,
        mean=cfg.data.mean,
        std=cfg.data.std,
        classes=classes,
        dynamo=dynamo,
        normalize_inside=normalize_inside,
        extra_metadata={"bbavectors.config": json.dumps(config_to_dict(cfg))},
    )
