"""Torch twin of :mod:`DOTA_devkit.geometry`, for code that runs on the GPU.

The conventions (image coordinates with y down, the long-edge clockwise-radians oriented box,
the screen-quadrant ``t, r, b, l`` rule, decoding ``tl = c + t + l`` ...) are defined and
illustrated with a worked example in :mod:`DOTA_devkit.geometry`; these functions follow them
exactly and are tested against the numpy versions. Every function is batched, differentiable
where it makes sense, and keeps the input's device and dtype.

Rotated IoU here is our own convex-polygon clipping (Sutherland-Hodgman, batched), because
torchvision's rotated ``box_iou`` only exists from torchvision 0.27 on (DESIGN §7): it is checked
against shapely in the tests.
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
    "convex_poly_area",
    "poly_iou_pairwise",
    "poly_iou_matrix",
    "rotated_nms",
    "batched_rotated_nms",
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


def _shoelace(pts: Tensor, valid: Tensor) -> Tensor:
    """Signed area of polygons ``(P, K, 2)`` whose first ``valid.sum(1)`` vertices are used."""
    n = valid.sum(1)
    k = torch.arange(pts.shape[1], device=pts.device)[None]
    nxt = torch.where(k + 1 < n[:, None], k + 1, torch.zeros_like(k))
    q = pts.gather(1, nxt[..., None].expand(-1, -1, 2))
    cross = pts[..., 0] * q[..., 1] - q[..., 0] * pts[..., 1]
    return 0.5 * (cross * valid).sum(1)


def convex_poly_area(poly: Tensor) -> Tensor:
    """Absolute area ``(N,)`` of 4-point polygons ``(N, 8)``."""
    p = poly.reshape(-1, 4, 2)
    return _shoelace(p, torch.ones(p.shape[:2], dtype=torch.bool, device=p.device)).abs()


def _clockwise(poly: Tensor) -> Tensor:
    """Reorder ``(N, 4, 2)`` corners clockwise on screen (positive shoelace with y down)."""
    ccw = _shoelace(poly, torch.ones(poly.shape[:2], dtype=torch.bool, device=poly.device)) < 0
    return torch.where(ccw[:, None, None], poly[:, [0, 3, 2, 1]], poly)


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


def poly_iou_pairwise(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of convex quadrilaterals.

    Args:
        a, b: ``(P, 8)`` each (any corner direction; non-convex quads are clipped as given).
    Returns:
        ``(P,)`` in ``[0, 1]``; degenerate polygons give 0.
    """
    pa = _clockwise(a.reshape(-1, 4, 2).to(torch.float64 if a.dtype == torch.float64 else torch.float32))
    pb = _clockwise(b.reshape(-1, 4, 2).to(pa.dtype))
    if pa.shape[0] == 0:
        return a.new_zeros(0)
    pts = pa
    valid = torch.ones(pa.shape[:2], dtype=torch.bool, device=a.device)
    for i in range(4):
        pts, valid = _clip_half_plane(pts, valid, pb[:, i], pb[:, (i + 1) % 4])
    inter = _shoelace(pts, valid).abs()
    area_a = _shoelace(pa, torch.ones_like(valid[:, :4])).abs()
    area_b = _shoelace(pb, torch.ones_like(valid[:, :4])).abs()
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
        out[i, j] = poly_iou_pairwise(a[i], b[j])
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


def batched_rotated_nms(poly: Tensor, scores: Tensor, classes: Tensor, iou_thresh: float) -> Tensor:
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
