r"""Head logits -> oriented detections, batched, on the outputs' device.

Steps (``d = down_ratio``):

1. peaks: a heatmap pixel is a candidate when its logit equals the 3x3 max-pool of the logits
   (done on logits, not on sigmoid scores: saturated float32 sigmoids tie at 1.0 and would turn
   a peak's neighbours into peaks);
2. per-class top-K, then overall top-K (``K = top_k``); score = sigmoid(logit);
3. centre ``c = (x + reg_x, y + reg_y) * d - o + s``, ``o`` the grid offset (``model.grid_offset``, 0
   for the original grid; see :func:`bbavectors.targets.encode_targets`), ``s`` the calibrated
   centre shift (``decode.centre_shift``, :mod:`bbavectors.engine.calibrate`; 0 until measured);
4. ``sigmoid(cls_theta) > cls_theta_thresh``: the ``t, r, b, l`` vectors (``wh[0:8] * d``); else the
   external box (``w, h = wh[8:10] * d``) as vectors ``t = (0, -h/2)``, ``r = (w/2, 0)``,
   ``b = (0, h/2)``, ``l = (-w/2, 0)``;
5. with ``rectangles`` (``decode.rectangles``), the rotated boxes' vectors are first replaced by
   the rectangle with the same Gaussian (:func:`bbavectors.probiou.gaussian_rectangle`: the
   quantity the ProbIoU loss trains; the raw vectors may form a diamond);
   With an angle head (an ``angle`` output, ``model.angle_head``) the rotated boxes are instead
   the rectangle along the head's direction with the vectors' Gaussian spread along and across it,
   centred on the Gaussian's mean (:func:`bbavectors.probiou.direction_rectangle`);
6. corners ``tl = c + t + l``, ``tr = c + t + r``, ``br = c + b + r``, ``bl = c + b + l``
   (:func:`bbavectors.geometry.tlrb_to_poly`).

:func:`decode_topk` stops there, with static shapes and only ONNX-exportable ops (max_pool2d,
topk, gather, where, arithmetic); when fewer than ``top_k`` peaks exist, the remaining
entries are padding: score 0, class 0, polygon all zeros. :func:`decode_detections` adds the
score threshold, the inverse letterbox and per-class rotated NMS, per image
(:func:`select_detections`, which an exported graph's top-K outputs go through too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DOWN_RATIO, DecodeConfig
from .geometry import rotated_nms_per_class, tlrb_to_poly
from .probiou import direction_rectangle, gaussian_rectangle, tlrb_gaussian

__all__ = ["decode_topk", "decode_detections", "select_detections", "peak_logits", "horizontal_vectors"]


def peak_logits(hm_logits: Tensor) -> Tensor:
    """``(B, C, h, w)`` logits with every non-peak (not the max of its 3x3 neighbourhood) set to -inf."""
    hmax = F.max_pool2d(hm_logits, kernel_size=3, stride=1, padding=1)
    return hm_logits.masked_fill(hm_logits != hmax, float("-inf"))


def horizontal_vectors(ext_wh: Tensor) -> Tensor:
    """External box sizes ``(..., 2)`` (w, h) -> axis-aligned ``t, r, b, l`` vectors ``(..., 4, 2)``."""
    half_w, half_h = ext_wh[..., 0] / 2, ext_wh[..., 1] / 2
    zero = torch.zeros_like(half_w)
    t = torch.stack([zero, -half_h], dim=-1)
    r = torch.stack([half_w, zero], dim=-1)
    b = torch.stack([zero, half_h], dim=-1)
    l = torch.stack([-half_w, zero], dim=-1)
    return torch.stack([t, r, b, l], dim=-2)


def _gather_channels(feature: Tensor, pix: Tensor) -> Tensor:
    """``(B, D, h, w)`` at flat pixel indices ``(B, K)`` -> ``(B, K, D)``."""
    flat = feature.flatten(2)
    idx = pix[:, None, :].expand(-1, flat.shape[1], -1)
    return flat.gather(2, idx).transpose(1, 2)


def decode_topk(
    outputs: dict[str, Tensor], top_k: int, cls_theta_thresh: float, down_ratio: int = DOWN_RATIO,
    rectangles: bool = False, grid_offset: float = 0.0, centre_shift: tuple[float, float] = (0.0, 0.0),
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``top_k`` best peaks per image as quadrilaterals; no threshold, no NMS, static shapes.

    Args:
        outputs: head logits ``hm (B, C, h, w)``, ``wh (B, 10, h, w)``, ``reg (B, 2, h, w)``,
            ``cls_theta (B, 1, h, w)``, optionally ``angle (B, 2, h, w)`` (step 5).
        top_k: ``K``, detections per image.
        cls_theta_thresh: sigmoid(cls_theta) above which the vectors are used.
        down_ratio: output stride.
        rectangles: rotated boxes as the rectangle of their vectors' Gaussian (module docstring,
            step 5); False: the vectors' own parallelogram (the original BBAVectors).
        grid_offset: the encoder's grid offset in input pixels (step 3).
        centre_shift: ``(dx, dy)`` added to every centre, in input pixels (step 3).
    Returns:
        ``polygons (B, K, 8)`` float32 in network-input pixels (corners tl, tr, br, bl),
        ``scores (B, K)`` float32 sorted decreasing, ``classes (B, K)`` int64; padding entries (fewer
        peaks than ``K``) have score 0, class 0 and an all-zero polygon.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    hm = outputs["hm"].float()
    b, c, h, w = hm.shape
    peaks = peak_logits(hm).flatten(2)
    # Padding with -inf makes top_k valid for any map size without a data-dependent min().
    peaks = torch.cat([peaks, peaks.new_full((b, c, top_k), float("-inf"))], dim=2)
    cls_logit, cls_pix = torch.topk(peaks, top_k, dim=2)  # (B, C, K)
    logit, sel = torch.topk(cls_logit.flatten(1), top_k, dim=1)  # (B, K)
    classes = torch.div(sel, top_k, rounding_mode="floor")
    pix = cls_pix.flatten(1).gather(1, sel).clamp(max=h * w - 1)
    ys = torch.div(pix, w, rounding_mode="floor")
    xs = pix - ys * w

    reg = _gather_channels(outputs["reg"].float(), pix)
    wh = _gather_channels(outputs["wh"].float(), pix)
    theta = _gather_channels(outputs["cls_theta"].float(), pix)[..., 0]
    cells = torch.stack([xs.float() + reg[..., 0], ys.float() + reg[..., 1]], dim=-1)
    centre = cells * down_ratio - grid_offset
    if centre_shift[0] != 0.0 or centre_shift[1] != 0.0:
        centre = centre + centre.new_tensor([float(centre_shift[0]), float(centre_shift[1])])
    rotated_vecs = wh[..., :8].reshape(b, top_k, 4, 2) * down_ratio
    level_vecs = horizontal_vectors(wh[..., 8:10] * down_ratio)
    use_vectors = torch.sigmoid(theta) > cls_theta_thresh
    if "angle" in outputs:
        direction = _gather_channels(outputs["angle"].float(), pix)
        rotated_centre, cov = tlrb_gaussian(centre, rotated_vecs)
        rotated_vecs = direction_rectangle(cov, direction)
        centre = torch.where(use_vectors[..., None], rotated_centre, centre)
    elif rectangles:
        rotated_centre, rotated_vecs = gaussian_rectangle(centre, rotated_vecs)
        centre = torch.where(use_vectors[..., None], rotated_centre, centre)
    vecs = torch.where(use_vectors[..., None, None], rotated_vecs, level_vecs)
    polygons = tlrb_to_poly(centre, vecs)
    # Padding (fewer than top_k peaks) is all zeros, so that every runtime returns the same thing
    # whatever order its topk gives equal (-inf) entries.
    real = torch.isfinite(logit)
    polygons = torch.where(real[..., None], polygons, torch.zeros_like(polygons))
    classes = torch.where(real, classes, torch.zeros_like(classes))
    return polygons, torch.sigmoid(logit), classes.long()


def decode_detections(
    outputs: dict[str, Tensor],
    cfg: DecodeConfig,
    down_ratio: int = DOWN_RATIO,
    letterbox: Tensor | None = None,
    grid_offset: float = 0.0,
) -> list[dict[str, Tensor]]:
    """Detections per image: :func:`decode_topk`, then :func:`select_detections`.

    Args:
        outputs: head logits (see :func:`decode_topk`), any batch size.
        cfg: top_k, score_thresh (kept: score > thresh), cls_theta_thresh, rectangles, centre_shift,
            nms_thresh (<= 0: no NMS).
        down_ratio: output stride.
        letterbox: ``(B, 3)`` ``[scale, pad_x, pad_y]`` per image: polygons are mapped back with
            ``x = (x' - pad_x) / scale``; None keeps network-input pixels.
        grid_offset: the encoder's grid offset (:func:`decode_topk`).
    Returns:
        One dict per image: ``polygons (N, 8)`` float32, ``scores (N,)`` float32, ``classes (N,)``
        int64, sorted by decreasing score, on the outputs' device.
    """
    polygons, scores, classes = decode_topk(outputs, cfg.top_k, cfg.cls_theta_thresh, down_ratio,
                                            rectangles=cfg.rectangles, grid_offset=grid_offset,
                                            centre_shift=cfg.centre_shift)
    return select_detections(polygons, scores, classes, cfg, letterbox)


def select_detections(
    polygons: Tensor, scores: Tensor, classes: Tensor, cfg: DecodeConfig, letterbox: Tensor | None = None
) -> list[dict[str, Tensor]]:
    """The second half of the decode, shared by every backend (PyTorch logits through
    :func:`decode_topk`, or an exported graph that ends with it): inverse letterbox, score threshold,
    per-class rotated NMS, per image.

    Args:
        polygons: ``(B, K, 8)`` in network-input pixels; scores: ``(B, K)``; classes: ``(B, K)``.
        cfg: ``score_thresh`` (kept: score > thresh) and ``nms_thresh`` (<= 0: no NMS) are used.
        letterbox: ``(B, 3)`` ``[scale, pad_x, pad_y]`` or None (see :func:`decode_detections`).
    Returns:
        One dict per image as :func:`decode_detections`.
    """
    polygons, scores, classes = polygons.float(), scores.float(), classes.long()
    batch = polygons.shape[0]
    if letterbox is not None:
        if letterbox.shape != (batch, 3):
            raise ValueError(
                f"letterbox must be ({batch}, 3) [scale, pad_x, pad_y], got {tuple(letterbox.shape)}"
            )
        lb = letterbox.to(device=polygons.device, dtype=polygons.dtype)
        scale = lb[:, 0, None, None]
        pad = lb[:, 1:3].repeat(1, 4)[:, None, :]  # (B, 1, 8) interleaved pad_x, pad_y
        polygons = (polygons - pad) / scale
    results = []
    for i in range(batch):
        keep = scores[i] > cfg.score_thresh
        p, s, c = polygons[i][keep], scores[i][keep], classes[i][keep]
        if cfg.nms_thresh > 0 and p.shape[0] > 1:
            kept = rotated_nms_per_class(p, s, c, cfg.nms_thresh)
            p, s, c = p[kept], s[kept], c[kept]
        results.append({"polygons": p, "scores": s, "classes": c})
    return results
