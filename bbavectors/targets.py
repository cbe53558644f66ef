r"""Ground truth for the four BBAVectors heads, built for a whole batch at once on the device.

Data workers only decode and augment; the trainer calls :func:`encode_targets` on the GPU with the
batch's polygons (network-input pixels). There is no per-object Python loop: the geometry of all
objects of the batch is computed as one tensor, and the Gaussians are rendered as one
``(objects, (2R+1)^2)`` window tensor scattered into the heatmap with ``scatter_reduce("amax")``.

Per object (``d = down_ratio``, output map ``h x w = ceil(H/d) x ceil(W/d)``):

* oriented box ``(cx, cy, w, h, angle)`` = minimum-area rectangle of the polygon
  (:func:`bbavectors.geometry.poly_to_obb`, no OpenCV);
* centre cell ``(ix, iy) = floor(c / d)``; ``ind = iy * w + ix``; ``reg = c / d - floor(c / d)`` in
  ``[0, 1)``. With a grid offset ``o`` (``model.align_grid``: ``o = (d - 1) / 2``) every cell rule
  here reads ``c + o`` instead of ``c`` (cell ``j`` covers input pixels ``[d j - o, d j + d - o)``),
  and a centre in the last ``o`` pixels of the map keeps the last cell with ``reg`` up to
  ``1 + o / d``;
* ``hm``: a Gaussian peaked (value exactly 1) at ``(ix, iy)`` in the object's class plane,
  ``sigma = (2 r + 1) / 6`` on a ``(2 r + 1)^2`` window, ``r = floor(gaussian_radius(w / d, h / d))``
  from the **oriented** box size; overlapping Gaussians take the maximum (CenterNet);
  with ``cfg.gaussian_shape == "box"`` an ellipse instead, aligned with the oriented box, with
  standard deviations ``box_gaussian_scale * (w, h) / (6 d)`` along and across it, on a
  ``(2 R + 1)^2`` window, ``R = ceil(3 * largest sigma)`` (TTFNet's shape: CornerNet's radius is
  0 for most objects under ~80 px, so every neighbour of a thin object's centre, even along its
  axis, would be a full negative);
  with ``cfg.subcell_peaks`` either shape is centred on the exact centre ``c / d`` instead of the
  centre cell's centre ``(ix + 0.5, iy + 0.5)``, the centre cell still set to exactly 1 (the
  neighbour nearer the true centre becomes the softer negative);
* ``wh`` (10 channels, output-stride units): the ``t, r, b, l`` vectors from the exact float
  centre to the edge midpoints (:func:`bbavectors.geometry.obb_to_tlrb`, the screen-quadrant rule
  documented in :mod:`DOTA_devkit.geometry`), then the external axis-aligned box's ``w, h``;
* ``cls_theta`` = 0 iff ``horizontal_iou(obb) >= cfg.horizontal_iou`` (the box is decoded with its
  external box), else 1 (decoded with the vectors). Computed analytically, no rasterising. With
  perfect outputs a "horizontal" box decodes to its external box, whose IoU with the object is
  exactly ``horizontal_iou``; so the round trip keeps IoU >= the threshold at every angle, while
  the vector labelling's jump (``t <-> l`` at axis alignment) falls inside the band. The
  measurement behind the default 0.98 is in ``docs/targets.md``.

Objects that cannot be positives become **ignore regions**, never negatives: difficult objects
(``difficult != 0`` and ``cfg.ignore_difficult``), boxes whose short side is below ``cfg.min_size``
input pixels (or zero), and boxes whose centre falls outside the output map. ``hm_ignore`` is True
over the ``(2 r + 1)^2`` window their Gaussian would have covered (at least their centre cell) and
over the cells whose centre lies inside their box (so the visible part of a box centred off the
map, or a large difficult object, is not trained as background), except at the peak cell of a
positive object; they get no ``wh/reg/cls_theta`` entry.

Objects beyond ``cfg.max_objects`` positives in one image keep their heatmap peak (they are real
objects, not negatives) but get no regression slot: they are counted in ``num_dropped`` and
logged as a warning, never dropped silently. Regression slots keep the input order.

Host synchronisations per call: two (the input check and the largest window size), plus one
when an image holds more objects than ``cfg.max_objects``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .config import DOWN_RATIO, TargetConfig
from .geometry import horizontal_iou, obb_to_tlrb, poly_to_obb

__all__ = [
    "encode_targets",
    "gaussian_radius",
    "RENDER_BUDGET",
]

logger = logging.getLogger(__name__)

#: Window elements (objects x (2R+1)^2) rendered per chunk; bounds memory when one huge object
#: would make every object's window huge.
RENDER_BUDGET = 1 << 21


def gaussian_radius(width: Tensor, height: Tensor, min_overlap: float) -> Tensor:
    """Largest corner displacement ``r`` keeping IoU >= ``min_overlap`` (CornerNet's rule, exact roots).

    CornerNet bounds three ways a predicted box can be off by ``r`` at its corners; each gives a
    quadratic in ``r`` whose correct root is taken here (CornerNet/CenterNet's code divides the
    2nd and 3rd roots by 2 instead of ``2a`` and takes the wrong sign in the 1st):

    1. shifted by ``r`` along both axes: ``IoU = (w-r)(h-r) / (2wh - (w-r)(h-r))``
       -> ``r^2 - (w+h) r + wh (1-o)/(1+o) = 0``, smaller root;
    2. shrunk by ``r`` on every side: ``IoU = (w-2r)(h-2r) / (wh)``
       -> ``4 r^2 - 2 (w+h) r + (1-o) wh = 0``, smaller root;
    3. grown by ``r`` on every side: ``IoU = wh / ((w+2r)(h+2r))``
       -> ``4 o r^2 + 2 o (w+h) r - (1-o) wh = 0``, positive root.

    Roots are written as ``2c / (b + sqrt(b^2 - 4ac))`` (no cancellation for thin boxes).

    Args:
        width, height: ``(N,)`` box sides (any unit; the radius comes out in the same unit).
        min_overlap: ``o`` in ``(0, 1)``.
    Returns:
        ``(N,)`` real-valued radius ``min(r1, r2, r3) >= 0`` (0 for empty boxes).
    """
    if not 0.0 < min_overlap < 1.0:
        raise ValueError(f"gaussian overlap must be in (0, 1), got {min_overlap}")
    o = min_overlap
    s = width + height
    p = width * height
    tiny = torch.finfo(s.dtype).tiny
    c1 = p * (1 - o) / (1 + o)
    r1 = 2 * c1 / (s + torch.sqrt((s * s - 4 * c1).clamp_min(0))).clamp_min(tiny)
    c2 = (1 - o) * p
    r2 = 2 * c2 / (2 * s + torch.sqrt((4 * s * s - 16 * c2).clamp_min(0))).clamp_min(tiny)
    r3 = 2 * c2 / (2 * o * s + torch.sqrt(4 * o * o * s * s + 16 * o * c2)).clamp_min(tiny)
    return torch.minimum(torch.minimum(r1, r2), r3).clamp_min(0)


def _check_inputs(
    polygons: Sequence[Tensor], classes: Sequence[Tensor], difficult: Sequence[Tensor], num_classes: int
) -> None:
    if not len(polygons) == len(classes) == len(difficult):
        raise ValueError(
            f"encode_targets: {len(polygons)} polygon sets, {len(classes)} class sets and "
            f"{len(difficult)} difficult sets; one of each per image expected"
        )
    if len(polygons) == 0:
        raise ValueError("encode_targets: empty batch")
    if num_classes < 1:
        raise ValueError(f"encode_targets: num_classes must be >= 1, got {num_classes}")
    for i, (p, c, d) in enumerate(zip(polygons, classes, difficult)):
        if p.ndim != 2 or p.shape[1] != 8:
            raise ValueError(f"encode_targets: image {i}: polygons must be (N, 8), got {tuple(p.shape)}")
        if c.shape != (p.shape[0],) or d.shape != (p.shape[0],):
            raise ValueError(
                f"encode_targets: image {i}: {p.shape[0]} polygons but classes {tuple(c.shape)} "
                f"and difficult {tuple(d.shape)}"
            )


def _report_bad_values(poly: Tensor, cls: Tensor, img: Tensor, num_classes: int) -> None:
    """Raise naming the first image with a non-finite coordinate or an out-of-range class."""
    bad = (~torch.isfinite(poly).all(1)) | (cls < 0) | (cls >= num_classes)
    if not bool(bad.any()):  # one host sync per batch
        return
    k = int(torch.nonzero(bad)[0, 0])
    raise ValueError(
        f"encode_targets: image {int(img[k])}: object with class {int(cls[k])} (valid 0..{num_classes - 1}) "
        f"and polygon {poly[k].tolist()}: classes must be in range and coordinates finite"
    )


def _chunks(radius: Tensor, budget: int) -> list[tuple[Tensor | None, int]]:
    """Object index sets (None = all) with the window radius each is rendered with."""
    rad = radius.cpu()
    r_max = int(rad.max())
    if rad.numel() * (2 * r_max + 1) ** 2 <= budget:
        return [(None, r_max)]
    order = torch.argsort(rad)
    out: list[tuple[Tensor | None, int]] = []
    start = 0
    n = rad.numel()
    while start < n:
        stop = start + 1
        while stop < n and (stop + 1 - start) * (2 * int(rad[order[stop]]) + 1) ** 2 <= budget:
            stop += 1
        out.append((order[start:stop].to(radius.device), int(rad[order[stop - 1]])))
        start = stop
    return out


def _gaussian_window(
    dx: Tensor, dy: Tensor, r: Tensor, cos: Tensor, sin: Tensor, box_sigmas: Tensor | None,
    subcell: Tensor | None = None,
) -> Tensor:
    """Unnormalised Gaussian over window offsets ``dx, dy (1, P)`` (cells from the centre cell):
    ``(M, P)``, exactly 1 at the centre cell.

    ``subcell`` ``(M, 2)``: where the Gaussian's own centre lies, in cells from the centre cell's
    centre (in ``[-0.5, 0.5)`` but for centres clamped into the map's last cell); None = on the
    cell's centre.
    """
    ddx, ddy = dx, dy
    if subcell is not None:
        ddx = dx - subcell[:, 0:1]
        ddy = dy - subcell[:, 1:2]
    if box_sigmas is None:
        sigma = (2 * r.float() + 1) / 6
        g = torch.exp(-(ddx * ddx + ddy * ddy).float() / (2 * sigma * sigma))
    else:
        along = ddx * cos[:, None] + ddy * sin[:, None]
        across = -ddx * sin[:, None] + ddy * cos[:, None]
        s_along, s_across = box_sigmas[:, 0:1], box_sigmas[:, 1:2]
        g = torch.exp(-(along * along / (2 * s_along * s_along) + across * across / (2 * s_across * s_across))
                      ).float()
    if subcell is not None:
        # The focal loss's positive is the cell valued exactly 1: keep it at the centre cell.
        g = torch.where((dx == 0) & (dy == 0), torch.ones_like(g), g)
    return g


def _render(
    hm_flat: Tensor,
    ign_flat: Tensor,
    obb_out: Tensor,
    cells: Tensor,
    radius: Tensor,
    plane: Tensor,
    img: Tensor,
    positive: Tensor,
    map_hw: tuple[int, int],
    box_sigmas: Tensor | None = None,
    subcell: Tensor | None = None,
) -> None:
    """Scatter every object's window: Gaussians of positives into ``hm_flat`` (max); for the others,
    their Gaussian square plus the cells whose centre lies in their box into ``ign_flat`` (max of 0/1).

    Args:
        hm_flat: ``(B * C * h * w,)``; ign_flat: ``(B * h * w,)``;
        obb_out: ``(M, 5)`` oriented boxes in output units; cells: ``(M, 2)`` long (ix, iy);
        radius: ``(M,)`` long Gaussian radius; plane: ``(M,)`` long ``b * C + class``;
        img: ``(M,)`` long; positive: ``(M,)`` bool;
        box_sigmas: None (round Gaussians, ``sigma = (2 r + 1) / 6``) or ``(M, 2)`` standard deviations
            along and across each box (output units), the window radius then being ``radius``;
        subcell: None (peaks centred on their cells) or ``(M, 2)`` each object's centre minus its
            centre cell's centre (cells), where its Gaussian is centred instead.
    """
    h, w = map_hw
    eps = torch.finfo(torch.float32).eps
    # Ignore windows must also cover the box (half its external extent, plus the cell offset).
    cos, sin = torch.cos(obb_out[:, 4]), torch.sin(obb_out[:, 4])
    half_ext = 0.5 * torch.maximum(obb_out[:, 2] * cos.abs() + obb_out[:, 3] * sin.abs(),
                                   obb_out[:, 2] * sin.abs() + obb_out[:, 3] * cos.abs())
    box_r = torch.ceil(half_ext).long() + 1
    window = torch.where(positive, radius, torch.maximum(radius, box_r))
    for sel, r_win in _chunks(window, RENDER_BUDGET):
        idx = slice(None) if sel is None else sel
        d = torch.arange(-r_win, r_win + 1, device=hm_flat.device)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)
        r = radius[idx][:, None]
        xs = cells[idx, 0:1] + dx
        ys = cells[idx, 1:2] + dy
        on_map = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        square = (dx.abs() <= r) & (dy.abs() <= r)
        pix = ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)
        g = _gaussian_window(dx, dy, r, cos[idx], sin[idx], None if box_sigmas is None else box_sigmas[idx],
                             None if subcell is None else subcell[idx])
        # CenterNet's cut of negligible tails (keeps footprints comparable with the original).
        g = torch.where(g >= eps, g, torch.zeros_like(g))
        pos = positive[idx][:, None]
        hm_val = torch.where(on_map & square & pos, g, torch.zeros_like(g))
        hm_idx = plane[idx][:, None] * (h * w) + pix
        hm_flat.scatter_reduce_(0, hm_idx.reshape(-1), hm_val.reshape(-1), "amax")
        # Cell centres (x + 0.5, y + 0.5) in the box frame: inside when within both half sides.
        ob = obb_out[idx]
        px = xs.to(ob.dtype) + 0.5 - ob[:, 0:1]
        py = ys.to(ob.dtype) + 0.5 - ob[:, 1:2]
        along = px * cos[idx][:, None] + py * sin[idx][:, None]
        across = -px * sin[idx][:, None] + py * cos[idx][:, None]
        in_box = (along.abs() <= ob[:, 2:3] / 2) & (across.abs() <= ob[:, 3:4] / 2)
        ign_val = (on_map & (square | in_box) & ~pos).float()
        ign_idx = img[idx][:, None] * (h * w) + pix
        ign_flat.scatter_reduce_(0, ign_idx.reshape(-1), ign_val.reshape(-1), "amax")


def _slot_ranks(positive: Tensor, counts: list[int]) -> Tensor:
    """Rank ``(M,)`` of each positive among the positives of its own image (input order)."""
    cum = torch.cat([positive.new_zeros(1, dtype=torch.long), positive.long().cumsum(0)])
    starts = torch.tensor([0, *counts[:-1]], device=positive.device).cumsum(0)
    before = cum[starts]
    img_before = torch.repeat_interleave(before, torch.tensor(counts, device=positive.device))
    return cum[1:] - 1 - img_before


def _regression_rows(obb: Tensor, cells: Tensor, cfg: TargetConfig, down_ratio: int
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-object ``reg (M, 2)``, ``wh (M, 10)`` and ``cls_theta (M, 1)`` (float32) of boxes ``(M, 5)``
    (centres in the grid's frame) whose centre cells are ``cells (M, 2)``."""
    reg = obb[:, :2] / down_ratio - cells.to(obb.dtype)
    tlrb = obb_to_tlrb(obb).reshape(-1, 8) / down_ratio
    cos, sin = torch.cos(obb[:, 4]).abs(), torch.sin(obb[:, 4]).abs()
    ext_w = (obb[:, 2] * cos + obb[:, 3] * sin) / down_ratio
    ext_h = (obb[:, 2] * sin + obb[:, 3] * cos) / down_ratio
    wh = torch.cat([tlrb, ext_w[:, None], ext_h[:, None]], dim=1)
    rotated = horizontal_iou(obb) < cfg.horizontal_iou
    return reg.float(), wh.float(), rotated.float()[:, None]


def _log_dropped(num_dropped: Tensor, counts: list[int], k_slots: int) -> None:
    if max(counts, default=0) <= k_slots:  # nothing can be dropped: no host sync
        return
    dropped = num_dropped.tolist()
    if sum(dropped) > 0:
        logger.warning(
            "encode_targets: %d objects beyond max_objects=%d per image got no regression "
            "target (heatmap peak kept); per image: %s",
            sum(dropped), k_slots, dropped,
        )


def encode_targets(
    polygons: Sequence[Tensor],
    classes: Sequence[Tensor],
    difficult: Sequence[Tensor],
    num_classes: int,
    input_hw: tuple[int, int],
    cfg: TargetConfig,
    down_ratio: int = DOWN_RATIO,
    grid_offset: float = 0.0,
) -> dict[str, Tensor]:
    """Encode a batch of objects into BBAVectors head targets (module docstring for the rules).

    Args:
        polygons: per image ``(N_i, 8)`` float, corners in network-input pixels (any order).
        classes: per image ``(N_i,)`` integer class ids in ``[0, num_classes)``.
        difficult: per image ``(N_i,)`` integer flags (0 = normal).
        num_classes: heatmap planes ``C``.
        input_hw: network input ``(H, W)``; maps are ``h = ceil(H / down_ratio)``,
            ``w = ceil(W / down_ratio)``.
        cfg: :class:`~bbavectors.config.TargetConfig`; ``K = cfg.max_objects`` regression slots per image.
        down_ratio: output stride.
        grid_offset: input pixels added to the centres before they are divided into cells
            (``model.grid_offset``; 0 = the original grid).
    Returns:
        On the polygons' device:
        ``hm`` ``(B, C, h, w)`` float32 in ``[0, 1]``, exactly 1 at positive centres;
        ``hm_ignore`` ``(B, 1, h, w)`` bool, True where the focal loss must not look;
        ``ind`` ``(B, K)`` long ``iy * w + ix``; ``mask`` ``(B, K)`` bool, valid slots;
        ``reg`` ``(B, K, 2)``; ``wh`` ``(B, K, 10)``; ``cls_theta`` ``(B, K, 1)`` float32 (0 in unused slots);
        ``num_dropped`` ``(B,)`` long, positives beyond ``K`` (peak kept, no slot);
        ``num_ignored`` ``(B,)`` long, objects turned into ignore regions.
    Raises:
        ValueError: mismatched per-image lists, wrong shapes, classes out of range or non-finite
            coordinates (naming the image).
    """
    _check_inputs(polygons, classes, difficult, num_classes)
    batch = len(polygons)
    device = polygons[0].device
    height, width = input_hw
    h, w = math.ceil(height / down_ratio), math.ceil(width / down_ratio)
    k_slots = cfg.max_objects
    counts = [int(p.shape[0]) for p in polygons]
    # Per-object geometry is cheap (M values), so it runs in float64 where the device has it:
    # the round trip then only loses float32 rounding at the very end.
    geo = torch.float32 if device.type == "mps" else torch.float64

    hm = torch.zeros(batch * num_classes * h * w, dtype=torch.float32, device=device)
    ignore = torch.zeros(batch * h * w, dtype=torch.float32, device=device)
    # One extra slot row (index batch * K) takes the writes of objects without a slot; cut off below.
    ind = torch.zeros(batch * k_slots + 1, dtype=torch.long, device=device)
    mask = torch.zeros(batch * k_slots + 1, dtype=torch.bool, device=device)
    reg = torch.zeros(batch * k_slots + 1, 2, dtype=torch.float32, device=device)
    wh = torch.zeros(batch * k_slots + 1, 10, dtype=torch.float32, device=device)
    cls_theta = torch.zeros(batch * k_slots + 1, 1, dtype=torch.float32, device=device)
    num_dropped = torch.zeros(batch, dtype=torch.long, device=device)
    num_ignored = torch.zeros(batch, dtype=torch.long, device=device)

    if sum(counts) > 0:
        poly = torch.cat([p.to(device=device, dtype=geo) for p in polygons])
        cls = torch.cat([c.to(device=device, dtype=torch.long) for c in classes])
        diff = torch.cat([d.to(device=device, dtype=torch.long) for d in difficult])
        img = torch.repeat_interleave(torch.arange(batch, device=device), torch.tensor(counts, device=device))
        _report_bad_values(poly, cls, img, num_classes)

        obb = poly_to_obb(poly)
        centre = obb[:, :2]
        inside = ((centre[:, 0] >= 0) & (centre[:, 0] < w * down_ratio)
                  & (centre[:, 1] >= 0) & (centre[:, 1] < h * down_ratio))
        if grid_offset:
            # Every cell rule below works in the grid's frame (module docstring).
            obb = torch.cat([centre + grid_offset, obb[:, 2:]], dim=1)
        cells = torch.floor(obb[:, :2] / down_ratio).long()
        # An offset can push a centre in the map's last pixels one cell past it: keep the last cell.
        # Centres outside the map keep their own cell (their ignore window is drawn around it).
        clamped = torch.stack([cells[:, 0].clamp(0, w - 1), cells[:, 1].clamp(0, h - 1)], dim=1)
        cells = torch.where(inside[:, None], clamped, cells)
        short = obb[:, 3]
        # 1e-4 px of slack: a 1-px side read from float32 corners measures 0.99999994.
        encodable = inside & (short + 1e-4 >= cfg.min_size) & (short > 0)
        positive = encodable & ~((diff != 0) & cfg.ignore_difficult)
        box_sigmas = None
        if cfg.gaussian_shape == "box":
            # Floor: a sigma of 0 (a zero side) would divide by zero; such boxes are ignore regions.
            box_sigmas = (cfg.box_gaussian_scale * obb[:, 2:4] / (6 * down_ratio)).clamp_min(1e-3)
            radius = torch.ceil(3 * box_sigmas.amax(1)).long()
        else:
            radius = gaussian_radius(obb[:, 2] / down_ratio, short / down_ratio, cfg.gaussian_overlap)
            radius = torch.floor(radius).long()

        obb_out = torch.cat([obb[:, :4] / down_ratio, obb[:, 4:]], dim=1)
        subcell = obb_out[:, :2] - (cells.to(obb_out.dtype) + 0.5) if cfg.subcell_peaks else None
        _render(hm, ignore, obb_out, cells, radius, img * num_classes + cls, img, positive, (h, w),
                box_sigmas, subcell)
        num_ignored.index_add_(0, img, (~positive).long())

        rank = _slot_ranks(positive, counts)
        slotted = positive & (rank < k_slots)
        slot = torch.where(slotted, img * k_slots + rank, torch.full_like(rank, batch * k_slots))
        ind[slot] = cells[:, 1] * w + cells[:, 0]
        mask[slot] = True
        reg[slot], wh[slot], cls_theta[slot] = _regression_rows(obb, cells, cfg, down_ratio)
        num_dropped.index_add_(0, img, (positive & ~slotted).long())
        _log_dropped(num_dropped, counts, k_slots)

    hm4 = hm.view(batch, num_classes, h, w)
    # A positive's own peak is never ignored, even under a neighbour's ignore window.
    peaks = hm4.amax(dim=1, keepdim=True) >= 1.0
    hm_ignore = (ignore.view(batch, 1, h, w) > 0.5) & ~peaks
    return {
        "hm": hm4,
        "hm_ignore": hm_ignore,
        "ind": ind[:-1].view(batch, k_slots),
        "mask": mask[:-1].view(batch, k_slots),
        "reg": reg[:-1].view(batch, k_slots, 2),
        "wh": wh[:-1].view(batch, k_slots, 10),
        "cls_theta": cls_theta[:-1].view(batch, k_slots, 1),
        "num_dropped": num_dropped,
        "num_ignored": num_ignored,
    }
