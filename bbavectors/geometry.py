"""Torch twin of :mod:`DOTA_devkit.geometry`, for code that runs on the GPU.

The conventions (image coordinates with y down, the long-edge clockwise-radians oriented box,
the screen-quadrant ``t, r, b, l`` rule, decoding ``tl = c + t + l`` ...) are defined and
illustrated with a worked example in :mod:`DOTA_devkit.geometry`; these functions follow them
exactly and are tested against the numpy versions. Every function is batched, differentiable
where it makes sense, and keeps the input's device and dtype.

Both twins use the same name for the same operation:

=========================  ==========================================================
name                       what
=========================  ==========================================================
``obb_to_poly``            ``(N, 5)`` oriented boxes -> ``(N, 8)`` corners
``poly_to_obb``            ``(N, 8)`` -> minimum-area ``(N, 5)``, long-edge convention
``obb_to_tlrb``            ``(N, 5)`` -> ``(N, 4, 2)`` t, r, b, l vectors
``tlrb_to_poly``           centres + t, r, b, l vectors -> corners
``poly_to_hbb``            ``(N, 8)`` -> external boxes ``(N, 4)``
``horizontal_iou``         IoU of each oriented box with its external box (analytic)
``poly_signed_area``       shoelace area, positive when clockwise on screen
``poly_area``              absolute area
``normalize_corner_order`` corners reordered clockwise on screen, first corner kept
``poly_iou``               element-wise IoU of two equally long sets ``(N,)``
``poly_iou_matrix``        IoU of all pairs ``(N, M)``
``rotated_nms``            greedy NMS of one class
``rotated_nms_per_class``  NMS run independently per class
=========================  ==========================================================

Rotated IoU here is our own convex-polygon clipping (Sutherland-Hodgman, batched), checked against
shapely in the tests. torchvision's rotated ``box_iou`` exists only from torchvision 0.27 on, and
this code must also run with older torchvision on machines without shapely, so nothing here uses it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "obb_to_poly",
    "poly_to_obb",
    "obb_to_tlrb",
    "tlrb_to_poly",
    "poly_to_hbb",
    "horizontal_iou",
    "poly_signed_area",
    "poly_area",
    "normalize_corner_order",
    "poly_iou",
    "poly_iou_matrix",
    "rotated_nms",
    "rotated_nms_per_class",
]

_HALF_PI = math.pi / 2


def obb_to_poly(obb: Tensor) -> Tensor:
    """``(N, 5)`` ``(cx, cy, w, h, angle)`` -> ``(N, 8)`` corners TL, TR, BR, BL turned by angle."""
    cx, cy, w, h, a = obb.unbind(-1)
    cos, sin = torch.cos(a), torch.sin(a)
    sx = obb.new_tensor([-0.5, 0.5, 0.5, -0.5])
    sy = obb.new_tensor([-0.5, -0.5, 0.5, 0.5])
    dx = sx * w[..., None]
    dy = sy * h[..., None]
    xs = cx[..., None] + dx * cos[..., None] - dy * sin[..., None]
    ys = cy[..., None] + dx * sin[..., None] + dy * cos[..., None]
    return torch.stack([xs, ys], dim=-1).flatten(-2)


def poly_to_obb(poly: Tensor) -> Tensor:
    """Minimum-area rectangle of 4-point polygons, long-edge convention.

    Args:
        poly: ``(N, 8)``, corners in any order.
    Returns:
        ``(N, 5)`` ``(cx, cy, w, h, angle)`` with ``w >= h`` and ``angle`` in ``[0, pi)``.
    """
    p = poly.reshape(-1, 4, 2)
    i_idx = torch.tensor([0, 0, 0, 1, 1, 2], device=poly.device)
    j_idx = torch.tensor([1, 2, 3, 2, 3, 3], device=poly.device)
    d = p[:, j_idx] - p[:, i_idx]
    theta = torch.atan2(d[..., 1], d[..., 0])
    cos, sin = torch.cos(theta), torch.sin(theta)
    pu = p[:, None, :, 0] * cos[..., None] + p[:, None, :, 1] * sin[..., None]
    pv = -p[:, None, :, 0] * sin[..., None] + p[:, None, :, 1] * cos[..., None]
    umax, umin = pu.amax(-1), pu.amin(-1)
    vmax, vmin = pv.amax(-1), pv.amin(-1)
    ext_u, ext_v = umax - umin, vmax - vmin
    best = torch.argmin(ext_u * ext_v, dim=1, keepdim=True)

    def pick(x: Tensor) -> Tensor:
        return x.gather(1, best).squeeze(1)

    th, cb, sb = pick(theta), pick(cos), pick(sin)
    eu, ev = pick(ext_u), pick(ext_v)
    mu = 0.5 * (pick(umax) + pick(umin))
    mv = 0.5 * (pick(vmax) + pick(vmin))
    cx = mu * cb - mv * sb
    cy = mu * sb + mv * cb
    long_is_u = eu >= ev
    w = torch.where(long_is_u, eu, ev)
    h = torch.where(long_is_u, ev, eu)
    ang = torch.remainder(torch.where(long_is_u, th, th + _HALF_PI), math.pi)
    ang = torch.where(ang >= math.pi - 1e-6, torch.zeros_like(ang), ang)
    return torch.stack([cx, cy, w, h, ang], dim=1)


def obb_to_tlrb(obb: Tensor) -> Tensor:
    """t, r, b, l vectors by the screen-quadrant rule.

    Args:
        obb: ``(N, 5)``.
    Returns:
        ``(N, 4, 2)`` vectors ``t, r, b, l`` relative to the centre.
    """
    w, h, a = obb[:, 2], obb[:, 3], obb[:, 4]
    u = torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    n = torch.stack([-torch.sin(a), torch.cos(a)], dim=1)
    hw, hh = (w / 2)[:, None], (h / 2)[:, None]
    vecs = torch.stack([u * hw, n * hh, -u * hw, -n * hh], dim=1)
    bearing_u = torch.remainder(torch.atan2(u[:, 0], -u[:, 1]), 2 * math.pi)
    # Same boundary guard as the numpy twin (float32 needs a coarser one).
    q = bearing_u / _HALF_PI
    eps = 1e-9 if obb.dtype == torch.float64 else 1e-5
    k = torch.floor(q + eps).long() % 4
    start = (-k) % 4
    order = (start[:, None] + torch.arange(4, device=obb.device)[None]) % 4
    return vecs.gather(1, order[..., None].expand(-1, -1, 2))


def tlrb_to_poly(center: Tensor, tlrb: Tensor) -> Tensor:
    """``(..., 2)`` centres and ``(..., 4, 2)`` t, r, b, l vectors -> ``(..., 8)`` corners
    ``tl, tr, br, bl`` (``tl = c + t + l`` ...)."""
    t, r, b, l = tlrb.unbind(-2)
    corners = torch.stack([t + l, t + r, b + r, b + l], dim=-2) + center[..., None, :]
    return corners.flatten(-2)


def poly_to_hbb(poly: Tensor) -> Tensor:
    """``(N, 8)`` -> ``(N, 4)`` external boxes ``(xmin, ymin, xmax, ymax)``."""
    p = poly.reshape(*poly.shape[:-1], 4, 2)
    return torch.cat([p.amin(-2), p.amax(-2)], dim=-1)


def horizontal_iou(obb: Tensor) -> Tensor:
    """``(N,)`` IoU of each oriented box with its external box (analytic area ratio)."""
    w, h, a = obb[:, 2], obb[:, 3], obb[:, 4]
    c, s = torch.cos(a).abs(), torch.sin(a).abs()
    ext = (w * c + h * s) * (w * s + h * c)
    r = torch.where(ext > 0, w * h / ext.clamp_min(1e-12), torch.zeros_like(ext))
    return r.clamp(0.0, 1.0)


def shoelace_area(pts: Tensor, valid: Tensor) -> Tensor:
    """Signed area of polygons ``(P, K, 2)`` whose first ``valid.sum(1)`` vertices are used."""
    n = valid.sum(1)
    k = torch.arange(pts.shape[1], device=pts.device)[None]
    nxt = torch.where(k + 1 < n[:, None], k + 1, torch.zeros_like(k))
    q = pts.gather(1, nxt[..., None].expand(-1, -1, 2))
    cross = pts[..., 0] * q[..., 1] - q[..., 0] * pts[..., 1]
    return 0.5 * (cross * valid).sum(1)


def poly_signed_area(poly: Tensor) -> Tensor:
    """Shoelace area ``(N,)`` of ``(N, 8)`` polygons; positive when the corners go clockwise on screen."""
    p = poly.reshape(-1, 4, 2)
    return shoelace_area(p, torch.ones(p.shape[:2], dtype=torch.bool, device=p.device))


def poly_area(poly: Tensor) -> Tensor:
    """Absolute area ``(N,)`` of 4-point polygons ``(N, 8)``."""
    return poly_signed_area(poly).abs()


def normalize_corner_order(poly: Tensor) -> Tensor:
    """``(N, 8)`` -> ``(N, 8)``: counter-clockwise rows get corners 2..4 reversed (now clockwise on
    screen), the first corner stays first; other rows are unchanged."""
    p = poly.reshape(-1, 4, 2)
    ccw = poly_signed_area(poly) < 0
    return torch.where(ccw[:, None, None], p[:, [0, 3, 2, 1]], p).reshape(-1, 8)


def _clip_half_plane(pts: Tensor, valid: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Clip polygons by the half-plane right of the directed line a -> b (inside of a clockwise
    on-screen polygon). pts ``(P, K, 2)``, valid ``(P, K)``, a/b ``(P, 2)`` -> at most K + 1
    vertices, compacted to the front and returned in a ``(P, K + 1)`` layout."""
    n = valid.sum(1)
    k_idx = torch.arange(pts.shape[1], device=pts.device)[None]
    nxt = torch.where(k_idx + 1 < n[:, None], k_idx + 1, torch.zeros_like(k_idx))
    q = pts.gather(1, nxt[..., None].expand(-1, -1, 2))
    e = (b - a)[:, None, :]

    def side(x: Tensor) -> Tensor:
        d = x - a[:, None, :]
        return e[..., 0] * d[..., 1] - e[..., 1] * d[..., 0]  # >= 0: inside (clockwise, y down)

    sp, sq = side(pts), side(q)
    inside_p, inside_q = sp >= 0, sq >= 0
    denom = sp - sq
    t = torch.where(denom.abs() > 1e-12, sp / torch.where(denom.abs() > 1e-12, denom, torch.ones_like(denom)),
                    torch.zeros_like(denom))
    inter = pts + t[..., None] * (q - pts)
    emit_p = valid & inside_p
    emit_x = valid & (inside_p != inside_q)
    cand = torch.stack([pts, inter], dim=2).flatten(1, 2)  # (P, 2K, 2) in edge order
    emit = torch.stack([emit_p, emit_x], dim=2).flatten(1, 2)
    # Stable compaction keeps the vertex order around the polygon.
    order = torch.argsort((~emit).to(torch.int8), dim=1, stable=True)
    kmax = pts.shape[1] + 1
    order = order[:, :kmax]
    out = cand.gather(1, order[..., None].expand(-1, -1, 2))
    out_valid = emit.gather(1, order)
    return out, out_valid


def poly_iou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of convex quadrilaterals (row i of ``a`` with row i of ``b``).

    Args:
        a, b: ``(P, 8)`` each (any corner direction; non-convex quads are clipped as given).
    Returns:
        ``(P,)`` in ``[0, 1]``; degenerate polygons give 0.
    """
    work = torch.float64 if a.dtype == torch.float64 else torch.float32
    pa = normalize_corner_order(a.reshape(-1, 8).to(work)).reshape(-1, 4, 2)
    pb = normalize_corner_order(b.reshape(-1, 8).to(work)).reshape(-1, 4, 2)
    if pa.shape[0] == 0:
        return a.new_zeros(0)
    pts = pa
    valid = torch.ones(pa.shape[:2], dtype=torch.bool, device=a.device)
    for i in range(4):
        pts, valid = _clip_half_plane(pts, valid, pb[:, i], pb[:, (i + 1) % 4])
    inter = shoelace_area(pts, valid).abs()
    area_a = shoelace_area(pa, torch.ones_like(valid[:, :4])).abs()
    area_b = shoelace_area(pb, torch.ones_like(valid[:, :4])).abs()
    union = area_a + area_b - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))
    return iou.clamp(0.0, 1.0).to(a.dtype)


def poly_iou_matrix(a: Tensor, b: Tensor, chunk: int = 1 << 18) -> Tensor:
    """Pairwise IoU ``(N, M)`` of convex quadrilaterals ``a (N, 8)``, ``b (M, 8)``; pairs whose
    external boxes are disjoint are skipped, the rest are clipped in chunks to bound memory."""
    out = a.new_zeros(a.shape[0], b.shape[0])
    if a.shape[0] == 0 or b.shape[0] == 0:
        return out
    ha, hb = poly_to_hbb(a), poly_to_hbb(b)
    overlap = (
        (torch.minimum(ha[:, None, 2], hb[None, :, 2]) >= torch.maximum(ha[:, None, 0], hb[None, :, 0]))
        & (torch.minimum(ha[:, None, 3], hb[None, :, 3]) >= torch.maximum(ha[:, None, 1], hb[None, :, 1]))
    )
    ii, jj = torch.nonzero(overlap, as_tuple=True)
    for s in range(0, ii.numel(), chunk):
        i, j = ii[s:s + chunk], jj[s:s + chunk]
        out[i, j] = poly_iou(a[i], b[j])
    return out


def rotated_nms(poly: Tensor, scores: Tensor, iou_thresh: float) -> Tensor:
    """Greedy NMS on quadrilaterals of one class; returns kept indices ``(K,)`` by decreasing score.

    The IoU matrix is computed on the input's device; the greedy sweep over it is sequential
    (a Python loop over kept boxes only, each step one vectorised row update).
    """
    if poly.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=poly.device)
    order = torch.argsort(scores, descending=True, stable=True)
    p = poly[order]
    iou = poly_iou_matrix(p, p)
    n = p.shape[0]
    suppressed = torch.zeros(n, dtype=torch.bool, device=poly.device)
    above = torch.triu(iou > iou_thresh, diagonal=1)
    keep = []
    sup_cpu = suppressed.cpu()
    above_cpu = above.cpu()
    for i in range(n):
        if sup_cpu[i]:
            continue
        keep.append(i)
        sup_cpu |= above_cpu[i]
    return order[torch.tensor(keep, dtype=torch.long, device=poly.device)]


def rotated_nms_per_class(poly: Tensor, scores: Tensor, classes: Tensor, iou_thresh: float) -> Tensor:
    """Rotated NMS independently per class (boxes of different classes never suppress each other).

    Args:
        poly: ``(N, 8)``; scores: ``(N,)``; classes: ``(N,)`` integer.
    Returns:
        Kept indices ``(K,)`` by decreasing score.
    """
    if poly.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=poly.device)
    # Shift each class far apart so one matrix serves all classes (torchvision's batched_nms trick).
    span = (poly.amax() - poly.amin()).abs() + 1.0
    offset = (classes.to(poly.dtype) * span * 2)[:, None]
    return rotated_nms(poly + offset, scores, iou_thresh)
