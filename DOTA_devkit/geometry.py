r"""Geometry conventions for oriented boxes: the one place that owns them (numpy; torch twin in
:mod:`bbavectors.geometry`).

Both twins use the same name for the same operation: ``obb_to_poly``, ``poly_to_obb``,
``obb_to_tlrb``, ``tlrb_to_poly``, ``poly_to_hbb``, ``horizontal_iou``, ``poly_signed_area``,
``poly_area``, ``normalize_corner_order``, ``poly_iou`` (element-wise, ``(N,)``), ``poly_iou_matrix``
(all pairs, ``(N, M)``), ``rotated_nms`` (one class) and ``rotated_nms_per_class``. Here polygon IoU is
shapely's (exact for any quadrilateral, bow-ties repaired); the twin clips convex polygons in torch.

Coordinates
-----------
Image coordinates, pixels, float: ``x`` to the right, ``y`` **down**. A *polygon* is 4 corners
``(x1, y1, x2, y2, x3, y3, x4, y4)``, shape ``(N, 8)``. DOTA labels list corners around the
object, usually clockwise on screen, sometimes not: code never trusts the order
(:func:`normalize_corner_order` fixes it where it matters).

Oriented box (OBB)
------------------
``(cx, cy, w, h, angle)``, shape ``(N, 5)``, **"long-edge, clockwise radians"** convention:

* ``w >= h`` (``w`` is the long side), ``angle`` in ``[0, pi)`` radians;
* ``angle`` is the direction of the long side, measured from the +x axis towards +y, i.e.
  **clockwise on screen** (the same rotation sense as roLabelImg);
* corners: ``c + R(angle) @ (-w/2, -h/2), (w/2, -h/2), (w/2, h/2), (-w/2, h/2)`` with
  ``R = [[cos, -sin], [sin, cos]]`` (:func:`obb_to_poly`).

:func:`poly_to_obb` returns the minimum-area rectangle of any 4 points, computed here (rotating
calipers over the 6 point pairs) and **not** with OpenCV's ``minAreaRect``, whose angle
convention changed in OpenCV 4.5.1.

Worked example: a box 40 px long and 20 px high, centred at (100, 50), turned 30 degrees
clockwise on screen::

    >>> poly = obb_to_poly(np.array([[100, 50, 40, 20, np.pi / 6]]))
    >>> poly.round(2)          # TL, TR, BR, BL of the unrotated box, turned about the centre
    array([[ 87.68,  31.34, 122.32,  51.34, 112.32,  68.66,  77.68,  48.66]])
    >>> poly_to_obb(poly).round(4)
    array([[100.    ,  50.    ,  40.    ,  20.    ,   0.5236]])

The t, r, b, l vectors (BBAVectors)
-----------------------------------
From the centre ``c`` the box has 4 vectors to its edge midpoints, 90 degrees apart. Name each by
its *screen bearing* ``beta``: the angle from straight **up** (``-y``), turning **clockwise**
(``beta = atan2(vx, -vy)`` in ``[0, 2 pi)``). Exactly one vector falls in each half-open quadrant::

                     up (beta = 0)
                          |
           l              |      t
      beta in [270, 360)  |   beta in [0, 90)
                          |
     ---------------------c---------------------> x (beta = 90)
                          |
           b              |      r
      beta in [180, 270)  |   beta in [90, 180)
                          |
                          v y (beta = 180)

So ``t`` points up or up-right, ``r`` right or down-right, ``b`` down or down-left, ``l`` left or
up-left; ``t, r, b, l`` go clockwise on screen. The rule depends only on the box, never on a
library's angle convention or on corner order. A vector exactly on a boundary belongs to the
quadrant that *starts* there (an axis-aligned box has ``t`` straight up, ``r`` straight right).

Worked example (the box above, long side at 30 degrees clockwise from +x): the long-side
midpoint vector ``+u*w/2`` has bearing 120 deg -> ``r = (17.32, 10)``; the short-side vectors
``-n*h/2`` (bearing 30 deg) -> ``t = (5, -8.66)``; ``-u*w/2`` (300 deg) -> ``l = (-17.32, -10)``;
``+n*h/2`` (210 deg) -> ``b = (-5, 8.66)``.

Decoding, as in the paper: ``tl = t + l + c``, ``tr = t + r + c``, ``br = b + r + c``,
``bl = b + l + c`` (vectors relative to ``c``; with absolute points this reads ``tl = t + l - c``).
Any cyclic relabelling gives the same 4 corners, so decoding is exact whatever the quadrant;
the quadrant rule only makes the *targets* a deterministic function of the box. It jumps when a
box crosses axis alignment (``t`` and ``l`` swap); that is what ``cls_theta`` and the external
box are for (:func:`horizontal_iou`).
"""

from __future__ import annotations

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "obb_to_poly",
    "poly_to_obb",
    "poly_signed_area",
    "poly_area",
    "normalize_corner_order",
    "obb_to_tlrb",
    "tlrb_to_poly",
    "poly_to_hbb",
    "horizontal_iou",
    "poly_iou",
    "poly_iou_matrix",
    "rotated_nms",
    "rotated_nms_per_class",
]

FloatArray = NDArray[np.float64]
_HALF_PI = np.pi / 2


def _as_rows(values: ArrayLike, width: int, what: str) -> FloatArray:
    """``(N, width)`` float64 rows; a single ``(width,)`` row is accepted as ``N = 1``."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"{what} must have shape (N, {width}), got {np.shape(values)}")
    return a


def _as_polys(poly: ArrayLike) -> FloatArray:
    return _as_rows(poly, 8, "polygons")


def _as_obbs(obb: ArrayLike) -> FloatArray:
    return _as_rows(obb, 5, "oriented boxes")


def obb_to_poly(obb: ArrayLike) -> FloatArray:
    """Corners of oriented boxes.

    Args:
        obb: ``(N, 5)`` ``(cx, cy, w, h, angle)``; any ``w``/``h`` order and angle accepted.
    Returns:
        ``(N, 8)`` corners TL, TR, BR, BL of the unrotated box, turned by ``angle`` about the centre.
    """
    b = _as_obbs(obb)
    cx, cy, w, h, a = b.T
    cos, sin = np.cos(a), np.sin(a)
    dx = np.array([-0.5, 0.5, 0.5, -0.5])[None] * w[:, None]
    dy = np.array([-0.5, -0.5, 0.5, 0.5])[None] * h[:, None]
    xs = cx[:, None] + dx * cos[:, None] - dy * sin[:, None]
    ys = cy[:, None] + dx * sin[:, None] + dy * cos[:, None]
    return np.stack([xs, ys], axis=2).reshape(-1, 8)


def poly_to_obb(poly: ArrayLike) -> FloatArray:
    """Minimum-area rectangle of each 4-point polygon, in the long-edge convention.

    The minimum-area rectangle of a point set has a side along an edge of its convex hull;
    the hull's edges are among the 6 point pairs, so all 6 directions are tried (vectorised).

    Args:
        poly: ``(N, 8)`` corners in any order.
    Returns:
        ``(N, 5)`` ``(cx, cy, w, h, angle)``, ``w >= h``, ``angle`` in ``[0, pi)``.
        All-coincident points give ``w = h = 0``, angle 0.
    """
    p = _as_polys(poly).reshape(-1, 4, 2)
    n = p.shape[0]
    i_idx, j_idx = np.triu_indices(4, k=1)
    d = p[:, j_idx] - p[:, i_idx]  # (N, 6, 2)
    theta = np.arctan2(d[..., 1], d[..., 0])  # (N, 6)
    cos, sin = np.cos(theta), np.sin(theta)
    # Project the 4 points on each candidate axis u = (cos, sin) and its normal (-sin, cos).
    pu = p[:, None, :, 0] * cos[..., None] + p[:, None, :, 1] * sin[..., None]  # (N, 6, 4)
    pv = -p[:, None, :, 0] * sin[..., None] + p[:, None, :, 1] * cos[..., None]
    ext_u = pu.max(-1) - pu.min(-1)
    ext_v = pv.max(-1) - pv.min(-1)
    area = ext_u * ext_v
    # A zero-length pair gives theta = 0: still a valid (axis-aligned) candidate.
    best = np.argmin(area, axis=1)
    rows = np.arange(n)
    th, cb, sb = theta[rows, best], cos[rows, best], sin[rows, best]
    eu, ev = ext_u[rows, best], ext_v[rows, best]
    mu = 0.5 * (pu[rows, best].max(-1) + pu[rows, best].min(-1))
    mv = 0.5 * (pv[rows, best].max(-1) + pv[rows, best].min(-1))
    cx = mu * cb - mv * sb
    cy = mu * sb + mv * cb
    long_is_u = eu >= ev
    w = np.where(long_is_u, eu, ev)
    h = np.where(long_is_u, ev, eu)
    ang = np.where(long_is_u, th, th + _HALF_PI)
    ang = np.mod(ang, np.pi)
    # mod can return pi - tiny for -tiny; fold so the angle range stays half-open.
    ang = np.where(ang >= np.pi - 1e-12, 0.0, ang)
    return np.stack([cx, cy, w, h, ang], axis=1)


def poly_signed_area(poly: ArrayLike) -> FloatArray:
    """Shoelace area ``(N,)``; positive when the corners go clockwise on screen (y down)."""
    p = _as_polys(poly).reshape(-1, 4, 2)
    x, y = p[..., 0], p[..., 1]
    return 0.5 * (x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1)


def poly_area(poly: ArrayLike) -> FloatArray:
    """Absolute shoelace area ``(N,)`` of 4-point polygons (self-intersecting ones: signed sum)."""
    return np.abs(poly_signed_area(poly))


def normalize_corner_order(poly: ArrayLike) -> FloatArray:
    """Reorder corners clockwise on screen, keeping the first corner (DOTA's meaningful start).

    Args:
        poly: ``(N, 8)``.
    Returns:
        ``(N, 8)``: rows whose signed area is negative (counter-clockwise) have corners 2..4
        reversed; others are unchanged.
    """
    p = _as_polys(poly).reshape(-1, 4, 2).copy()
    ccw = poly_signed_area(p.reshape(-1, 8)) < 0
    p[ccw] = p[ccw][:, [0, 3, 2, 1]]
    return p.reshape(-1, 8)


def obb_to_tlrb(obb: ArrayLike) -> FloatArray:
    """The t, r, b, l vectors of oriented boxes by the screen-quadrant rule (module docstring).

    Args:
        obb: ``(N, 5)`` ``(cx, cy, w, h, angle)``.
    Returns:
        ``(N, 4, 2)``: vectors ``t, r, b, l`` relative to the centre, ``(dx, dy)`` in pixels.
    """
    b = _as_obbs(obb)
    _, _, w, h, a = b.T
    u = np.stack([np.cos(a), np.sin(a)], axis=1)
    n = np.stack([-np.sin(a), np.cos(a)], axis=1)  # u turned 90 deg clockwise on screen
    # Ordered by increasing bearing (+90 deg each): u, n, -u, -n.
    vecs = np.stack([u * (w / 2)[:, None], n * (h / 2)[:, None], -u * (w / 2)[:, None],
                     -n * (h / 2)[:, None]], axis=1)
    bearing_u = np.mod(np.arctan2(u[:, 0], -u[:, 1]), 2 * np.pi)
    # Rounding guards the boundary: a bearing of 90 - 1e-13 deg is treated as exactly 90.
    k = np.floor(np.round(bearing_u / _HALF_PI, 9)).astype(np.int64) % 4
    start = (-k) % 4  # index in `vecs` of the vector whose bearing is in [0, 90)
    order = (start[:, None] + np.arange(4)[None]) % 4
    return np.take_along_axis(vecs, order[..., None], axis=1)


def tlrb_to_poly(center: ArrayLike, tlrb: ArrayLike) -> FloatArray:
    """Corners from a centre and its t, r, b, l vectors (the BBAVectors decoding).

    Args:
        center: ``(N, 2)``.
        tlrb: ``(N, 4, 2)`` vectors ``t, r, b, l`` relative to the centre.
    Returns:
        ``(N, 8)`` corners ``tl, tr, br, bl`` with ``tl = c + t + l`` etc. (a general
        quadrilateral when the vectors are not exactly perpendicular).
    """
    c = np.asarray(center, dtype=np.float64).reshape(-1, 1, 2)
    v = np.asarray(tlrb, dtype=np.float64).reshape(-1, 4, 2)
    t, r, bv, l = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
    corners = np.stack([t + l, t + r, bv + r, bv + l], axis=1) + c
    return corners.reshape(-1, 8)


def poly_to_hbb(poly: ArrayLike) -> FloatArray:
    """External axis-aligned boxes ``(N, 4)`` as ``(xmin, ymin, xmax, ymax)``."""
    p = _as_polys(poly).reshape(-1, 4, 2)
    return np.concatenate([p.min(axis=1), p.max(axis=1)], axis=1)


def horizontal_iou(obb: ArrayLike) -> FloatArray:
    """IoU of each oriented box with its external axis-aligned box, computed analytically.

    The oriented box lies inside its external box, so the IoU is the area ratio
    ``w h / ((w |cos a| + h |sin a|) (w |sin a| + h |cos a|))``: 1 for an axis-aligned box, lower
    the more it is turned and the more elongated it is. ``cls_theta`` uses it (docs/targets.md).

    Args:
        obb: ``(N, 5)``.
    Returns:
        ``(N,)`` in ``[0, 1]``; 0 for degenerate boxes.
    """
    b = _as_obbs(obb)
    w, h, a = b[:, 2], b[:, 3], b[:, 4]
    c, s = np.abs(np.cos(a)), np.abs(np.sin(a))
    ext = (w * c + h * s) * (w * s + h * c)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(ext > 0, (w * h) / np.where(ext > 0, ext, 1.0), 0.0)
    return np.clip(r, 0.0, 1.0)


def _shapely_polys(poly: FloatArray) -> NDArray[np.object_]:
    """Shapely polygons; self-intersecting (bow-tie) corner orders are replaced by the convex hull
    of the 4 points, so that a mis-ordered label still has the area its corners enclose."""
    geoms = shapely.polygons(poly.reshape(-1, 4, 2))
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms[bad] = shapely.convex_hull(geoms[bad])
    return geoms


def _intersection_area(ga: NDArray[np.object_], gb: NDArray[np.object_]) -> FloatArray:
    """Intersection areas; robust to GEOS overlay failures on near-identical thin polygons.

    GEOS's floating overlay can return a non-areal result (e.g. a MULTIPOINT) for two copies of a
    100 x 1 box that differ by 1e-14 px; those pairs, and only those (they intersect but got zero
    area), are recomputed with snap rounding on a 1e-9 px grid.
    """
    inter = shapely.area(shapely.intersection(ga, gb))
    suspect = np.nonzero(inter <= 0)[0]
    if len(suspect):
        touching = suspect[shapely.intersects(ga[suspect], gb[suspect])]
        if len(touching):
            inter[touching] = shapely.area(shapely.intersection(ga[touching], gb[touching], grid_size=1e-9))
    return np.asarray(inter, dtype=np.float64)


def _iou_from_geoms(ga: NDArray[np.object_], gb: NDArray[np.object_]) -> FloatArray:
    inter = _intersection_area(ga, gb)
    union = shapely.area(ga) + shapely.area(gb) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.nan_to_num(np.clip(iou, 0.0, 1.0), nan=0.0)


def poly_iou(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Element-wise polygon IoU of two equally long sets.

    Args:
        a, b: ``(N, 8)`` each.
    Returns:
        ``(N,)`` in ``[0, 1]``; degenerate polygons (zero area) give 0, never NaN.
    """
    pa, pb = _as_polys(a), _as_polys(b)
    if pa.shape != pb.shape:
        raise ValueError(f"poly_iou needs equal shapes, got {pa.shape} and {pb.shape}")
    if len(pa) == 0:
        return np.zeros(0)
    return _iou_from_geoms(_shapely_polys(pa), _shapely_polys(pb))


def poly_iou_matrix(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Pairwise polygon IoU.

    Pairs whose external boxes do not overlap are skipped (IoU 0) before any polygon clipping.

    Args:
        a: ``(N, 8)``; b: ``(M, 8)``.
    Returns:
        ``(N, M)`` in ``[0, 1]``.
    """
    pa, pb = _as_polys(a), _as_polys(b)
    out = np.zeros((len(pa), len(pb)))
    if len(pa) == 0 or len(pb) == 0:
        return out
    ha, hb = poly_to_hbb(pa), poly_to_hbb(pb)
    overlap = (
        (np.minimum(ha[:, None, 2], hb[None, :, 2]) >= np.maximum(ha[:, None, 0], hb[None, :, 0]))
        & (np.minimum(ha[:, None, 3], hb[None, :, 3]) >= np.maximum(ha[:, None, 1], hb[None, :, 1]))
    )
    ii, jj = np.nonzero(overlap)
    if len(ii):
        ga, gb = _shapely_polys(pa), _shapely_polys(pb)
        out[ii, jj] = _iou_from_geoms(ga[ii], gb[jj])
    return out


def rotated_nms(poly: ArrayLike, scores: ArrayLike, iou_thresh: float) -> NDArray[np.int64]:
    """Greedy non-maximum suppression on polygons (one class).

    A box is removed when its IoU with a higher-scoring kept box is greater than ``iou_thresh``.
    Ties in score keep the earlier index.

    Args:
        poly: ``(N, 8)``; scores: ``(N,)``.
    Returns:
        Indices of kept boxes ``(K,)``, by decreasing score.
    """
    p = _as_polys(poly)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(p):
        raise ValueError(f"{len(p)} polygons but {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    if len(order) == 0:
        return order.astype(np.int64)
    p = p[order]
    geoms = _shapely_polys(p)
    hbb = poly_to_hbb(p)
    suppressed = np.zeros(len(p), dtype=bool)
    keep: list[int] = []
    for i in range(len(p)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.nonzero(~suppressed[i + 1:])[0] + i + 1
        if len(rest) == 0:
            break
        hit = (
            (np.minimum(hbb[i, 2], hbb[rest, 2]) >= np.maximum(hbb[i, 0], hbb[rest, 0]))
            & (np.minimum(hbb[i, 3], hbb[rest, 3]) >= np.maximum(hbb[i, 1], hbb[rest, 1]))
        )
        cand = rest[hit]
        if len(cand):
            iou = _iou_from_geoms(np.repeat(geoms[i:i + 1], len(cand)), geoms[cand])
            suppressed[cand[iou > iou_thresh]] = True
    return order[np.asarray(keep, dtype=np.int64)]


def rotated_nms_per_class(
    poly: ArrayLike, scores: ArrayLike, classes: ArrayLike, iou_thresh: float
) -> NDArray[np.int64]:
    """Rotated NMS run independently per class.

    Args:
        poly: ``(N, 8)``; scores: ``(N,)``; classes: ``(N,)`` integer labels.
    Returns:
        Kept indices ``(K,)`` by decreasing score.
    """
    p = _as_polys(poly)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    c = np.asarray(classes).reshape(-1)
    keep_all = []
    for cls in np.unique(c):
        idx = np.nonzero(c == cls)[0]
        keep_all.append(idx[rotated_nms(p[idx], s[idx], iou_thresh)])
    if not keep_all:
        return np.zeros(0, dtype=np.int64)
    keep = np.concatenate(keep_all)
    return keep[np.argsort(-s[keep], kind="stable")]
