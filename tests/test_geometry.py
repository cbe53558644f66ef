"""Geometry conventions (DOTA_devkit.geometry): hand-derived values, round trips, references."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from DOTA_devkit import geometry as G

SQ2 = math.sqrt(2.0)


def square(x0: float, y0: float, s: float) -> np.ndarray:
    return np.array([[x0, y0, x0 + s, y0, x0 + s, y0 + s, x0, y0 + s]], dtype=np.float64)


def rotated(poly: np.ndarray, deg: float) -> np.ndarray:
    """Rotate polygon corners about their mean (clockwise on screen for positive degrees)."""
    p = poly.reshape(-1, 4, 2)
    c = p.mean(axis=1, keepdims=True)
    a = math.radians(deg)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return ((p - c) @ r.T + c).reshape(-1, 8)


# ---------------------------------------------------------------- OBB <-> polygon


def test_docstring_worked_example():
    poly = G.obb_to_poly(np.array([[100, 50, 40, 20, math.pi / 6]]))
    np.testing.assert_allclose(
        poly.round(2), [[87.68, 31.34, 122.32, 51.34, 112.32, 68.66, 77.68, 48.66]]
    )
    np.testing.assert_allclose(G.poly_to_obb(poly), [[100, 50, 40, 20, math.pi / 6]], atol=1e-9)
    tlrb = G.obb_to_tlrb(np.array([[100, 50, 40, 20, math.pi / 6]]))[0]
    np.testing.assert_allclose(tlrb, [[5, -5 * math.sqrt(3)], [10 * math.sqrt(3), 10],
                                      [-5, 5 * math.sqrt(3)], [-10 * math.sqrt(3), -10]], atol=1e-9)


def test_obb_to_poly_axis_aligned_by_hand():
    poly = G.obb_to_poly(np.array([[10, 20, 8, 4, 0.0]]))
    np.testing.assert_allclose(poly, [[6, 18, 14, 18, 14, 22, 6, 22]])
    # Positive angle turns clockwise on screen: 90 deg puts the long side vertical, TL goes top-right.
    poly90 = G.obb_to_poly(np.array([[10, 20, 8, 4, math.pi / 2]]))
    np.testing.assert_allclose(poly90, [[12, 16, 12, 24, 8, 24, 8, 16]], atol=1e-12)


@pytest.mark.parametrize("deg", [0, 1, 30, 44.9, 45, 45.1, 89.9, 90, 90.1, 135, 179, 179.99])
@pytest.mark.parametrize("wh", [(40, 20), (20, 40), (30, 30), (1, 1), (100, 1)])
def test_poly_to_obb_roundtrip_long_edge(deg, wh):
    obb = np.array([[50.0, 60.0, wh[0], wh[1], math.radians(deg)]])
    got = G.poly_to_obb(G.obb_to_poly(obb))[0]
    assert got[2] >= got[3]
    assert 0 <= got[4] < math.pi
    np.testing.assert_allclose(got[:2], [50, 60], atol=1e-9)
    np.testing.assert_allclose(sorted(got[2:4]), sorted(wh), atol=1e-9)
    # Same rectangle whatever the canonical angle: compare corners as sets.
    assert G.poly_iou(G.obb_to_poly(got[None]), G.obb_to_poly(obb))[0] > 1 - 1e-9


def test_poly_to_obb_independent_of_corner_order_and_start():
    rng = np.random.default_rng(0)
    obb = np.c_[rng.uniform(0, 500, (200, 2)), rng.uniform(2, 100, (200, 2)), rng.uniform(0, np.pi, 200)]
    poly = G.obb_to_poly(obb).reshape(-1, 4, 2)
    ref = G.poly_to_obb(poly.reshape(-1, 8))
    for perm in ([1, 2, 3, 0], [3, 2, 1, 0], [2, 1, 0, 3]):
        got = G.poly_to_obb(poly[:, perm].reshape(-1, 8))
        np.testing.assert_allclose(got[:, :4], ref[:, :4], atol=1e-7)
        d = np.abs(got[:, 4] - ref[:, 4])
        assert np.all(np.minimum(d, np.pi - d) < 1e-7)


def test_poly_to_obb_matches_opencv_min_area_rect_area():
    """Regression (docs/design.md "Known flaws" item 2): no OpenCV angle convention, but the same
    minimum-area rectangle."""
    rng = np.random.default_rng(1)
    quads = rng.uniform(0, 100, (300, 8))
    ours = G.poly_to_obb(quads)
    for q, o in zip(quads, ours):
        (_, _), (w, h), _ = cv2.minAreaRect(q.reshape(4, 2).astype(np.float32))
        assert o[2] * o[3] == pytest.approx(w * h, rel=1e-4, abs=1e-3)


def test_degenerate_polygon_gives_zero_box():
    got = G.poly_to_obb(np.array([[5, 5, 5, 5, 5, 5, 5, 5.0]]))
    np.testing.assert_allclose(got, [[5, 5, 0, 0, 0]])
    assert np.isfinite(G.poly_to_obb(np.array([[0, 0, 10, 0, 20, 0, 30, 0.0]]))).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        G.poly_to_obb(np.zeros((3, 6)))
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        G.obb_to_poly(np.zeros((3, 4)))


def test_signed_area_and_corner_order():
    cw = square(0, 0, 2)  # right, down, left: clockwise on screen with y down
    assert G.poly_signed_area(cw)[0] == pytest.approx(4.0)
    ccw = cw.reshape(4, 2)[[0, 3, 2, 1]].reshape(1, 8)
    assert G.poly_signed_area(ccw)[0] == pytest.approx(-4.0)
    np.testing.assert_allclose(G.normalize_corner_order(ccw), cw)
    np.testing.assert_allclose(G.normalize_corner_order(cw), cw)


# ---------------------------------------------------------------- t, r, b, l vectors


def bearing(v: np.ndarray) -> np.ndarray:
    return np.degrees(np.mod(np.arctan2(v[..., 0], -v[..., 1]), 2 * np.pi))


def test_tlrb_axis_aligned_by_hand():
    tlrb = G.obb_to_tlrb(np.array([[0, 0, 40, 20, 0.0]]))[0]
    np.testing.assert_allclose(tlrb, [[0, -10], [20, 0], [0, 10], [-20, 0]], atol=1e-12)


def test_tlrb_at_90_degrees_by_hand():
    tlrb = G.obb_to_tlrb(np.array([[0, 0, 40, 20, math.pi / 2]]))[0]
    np.testing.assert_allclose(tlrb, [[0, -20], [10, 0], [0, 20], [-10, 0]], atol=1e-12)


def test_tlrb_at_45_degrees_by_hand():
    # Long side pointing down-right (bearing 135): it is r; the short side pointing up-right is t.
    tlrb = G.obb_to_tlrb(np.array([[0, 0, 40, 20, math.pi / 4]]))[0]
    np.testing.assert_allclose(tlrb[0], [10 / SQ2, -10 / SQ2], atol=1e-12)
    np.testing.assert_allclose(tlrb[1], [20 / SQ2, 20 / SQ2], atol=1e-12)


def test_tlrb_at_135_degrees_by_hand():
    # Long side direction (-1, 1)/sqrt2 has bearing 225 (b); its opposite, bearing 45, is t.
    tlrb = G.obb_to_tlrb(np.array([[0, 0, 40, 20, 3 * math.pi / 4]]))[0]
    np.testing.assert_allclose(tlrb[0], [20 / SQ2, -20 / SQ2], atol=1e-12)
    np.testing.assert_allclose(tlrb[2], [-20 / SQ2, 20 / SQ2], atol=1e-12)


@pytest.mark.parametrize("wh", [(40, 20), (30, 30), (1, 1), (8, 1)])
def test_tlrb_quadrants_for_every_angle(wh):
    angles = np.radians(np.arange(0, 180, 0.25))
    obb = np.c_[np.zeros((len(angles), 2)), np.tile(wh, (len(angles), 1)), angles]
    tlrb = G.obb_to_tlrb(obb)
    b = bearing(tlrb)
    lo = np.array([0, 90, 180, 270])
    # Each vector in its half-open quadrant (tolerance for -0.0 style float noise on boundaries).
    inq = ((b - lo) % 360 < 90 + 1e-7) | ((b - lo) % 360 > 360 - 1e-7)
    assert inq.all()
    # Perpendicular, correct lengths, clockwise order.
    np.testing.assert_allclose(np.einsum("nk,nk->n", tlrb[:, 0], tlrb[:, 1]), 0, atol=1e-9)
    lengths = np.linalg.norm(tlrb, axis=2)
    np.testing.assert_allclose(np.sort(lengths, axis=1), np.tile(np.sort([wh[0], wh[0], wh[1], wh[1]]) / 2,
                                                                 (len(angles), 1)), atol=1e-9)


@pytest.mark.parametrize("deg", [0, 45, 90, 135])
def test_tlrb_near_quadrant_boundaries_is_deterministic(deg):
    for eps in (-1e-6, -1e-12, 0.0, 1e-12, 1e-6):
        obb = np.array([[3, 4, 17, 9, math.radians(deg) + eps]])
        a, b = G.obb_to_tlrb(obb), G.obb_to_tlrb(obb.copy())
        np.testing.assert_array_equal(a, b)
        # Whatever the labelling, decoding gives the box back.
        poly = G.tlrb_to_poly(obb[:, :2], a)
        assert G.poly_iou(poly, G.obb_to_poly(obb))[0] > 1 - 1e-9


def test_tlrb_boundary_belongs_to_quadrant_that_starts_there():
    # Exactly axis-aligned: t straight up, r straight right (never t straight right).
    for a in (0.0, math.pi / 2, math.pi - 1e-13):
        tlrb = G.obb_to_tlrb(np.array([[0, 0, 40, 20, a]]))[0]
        assert abs(tlrb[0, 0]) < 1e-9 and tlrb[0, 1] < 0
        assert tlrb[1, 0] > 0 and abs(tlrb[1, 1]) < 1e-9


def test_tlrb_one_pixel_boxes_finite():
    obb = np.c_[np.zeros((4, 2)), np.ones((4, 2)), np.radians([0, 45, 90, 135])]
    tlrb = G.obb_to_tlrb(obb)
    assert np.isfinite(tlrb).all()
    np.testing.assert_allclose(np.linalg.norm(tlrb, axis=2), 0.5, atol=1e-12)


def test_tlrb_to_poly_is_exact_inverse():
    rng = np.random.default_rng(2)
    obb = np.c_[rng.uniform(0, 500, (500, 2)), rng.uniform(1, 200, (500, 2)), rng.uniform(0, np.pi, 500)]
    obb = G.poly_to_obb(G.obb_to_poly(obb))
    poly = G.tlrb_to_poly(obb[:, :2], G.obb_to_tlrb(obb))
    assert (G.poly_iou(poly, G.obb_to_poly(obb)) > 1 - 1e-9).all()


def test_tlrb_ignores_opencv_angle_convention():
    """Regression (docs/design.md "Known flaws" item 2): the original took the vectors from
    cv2.boxPoints and an exact float test `theta in [-90, 0]`, so they changed with OpenCV 4.5.1.
    Ours come from the box alone: the same rectangle given through any corner order/start gives
    identical vectors."""
    obb = np.array([[100, 100, 60, 20, math.radians(30)]])
    poly = G.obb_to_poly(obb).reshape(4, 2)
    ref = G.obb_to_tlrb(G.poly_to_obb(poly.reshape(1, 8)))
    for start in range(4):
        for order in ([0, 1, 2, 3], [0, 3, 2, 1]):
            p = np.roll(poly[order], start, axis=0).reshape(1, 8)
            np.testing.assert_allclose(G.obb_to_tlrb(G.poly_to_obb(p)), ref, atol=1e-9)


# ---------------------------------------------------------------- horizontal IoU


def test_horizontal_iou_by_hand():
    assert G.horizontal_iou(np.array([[0, 0, 40, 20, 0.0]]))[0] == pytest.approx(1.0)
    # A square turned 45 deg: its external box has twice its area.
    assert G.horizontal_iou(np.array([[0, 0, 10, 10, math.pi / 4]]))[0] == pytest.approx(0.5)
    # 2:1 box at 90 deg is axis-aligned again.
    assert G.horizontal_iou(np.array([[0, 0, 40, 20, math.pi / 2]]))[0] == pytest.approx(1.0)
    assert G.horizontal_iou(np.array([[0, 0, 0, 0, 0.3]]))[0] == 0.0


def test_horizontal_iou_equals_polygon_iou_with_external_box():
    rng = np.random.default_rng(3)
    obb = np.c_[rng.uniform(0, 50, (100, 2)), rng.uniform(1, 80, (100, 2)), rng.uniform(0, np.pi, 100)]
    poly = G.obb_to_poly(obb)
    x0, y0, x1, y1 = G.poly_to_hbb(poly).T
    hbb_poly = np.stack([x0, y0, x1, y0, x1, y1, x0, y1], axis=1)
    np.testing.assert_allclose(G.horizontal_iou(obb), G.poly_iou(poly, hbb_poly), atol=1e-9)


# ---------------------------------------------------------------- IoU


def test_iou_identical():
    p = rotated(square(0, 0, 10), 17)
    assert G.poly_iou(p, p)[0] == pytest.approx(1.0)


def test_iou_half_overlapping_squares_is_one_third():
    # Two 2x2 squares overlapping by a 1x2 strip: 2 / (4 + 4 - 2).
    assert G.poly_iou(square(0, 0, 2), square(1, 0, 2))[0] == pytest.approx(1 / 3)


def test_iou_square_vs_itself_rotated_45():
    # Side 2 centred at the origin; the 45-degree copy cuts 4 corner triangles of legs 2 - sqrt2:
    # intersection 4 - 2 (2 - sqrt2)^2 = 8 sqrt2 - 8, union 8 - that = 16 - 8 sqrt2,
    # IoU = (sqrt2 - 1) / (2 - sqrt2) = 1 / sqrt2.
    s = square(-1, -1, 2)
    assert G.poly_iou(s, rotated(s, 45))[0] == pytest.approx(1 / SQ2, rel=1e-12)


def test_iou_disjoint_contained_degenerate():
    assert G.poly_iou(square(0, 0, 2), square(5, 5, 2))[0] == 0.0
    assert G.poly_iou(square(0, 0, 4), square(1, 1, 2))[0] == pytest.approx(4 / 16)
    line = np.array([[0, 0, 4, 0, 4, 0, 0, 0.0]])
    point = np.zeros((1, 8))
    for d in (line, point):
        v = G.poly_iou(d, square(0, 0, 4))[0]
        assert v == 0.0 and not math.isnan(v)
        assert G.poly_iou(d, d)[0] == 0.0


def test_iou_bow_tie_uses_convex_hull():
    bow = square(0, 0, 2).reshape(4, 2)[[0, 2, 1, 3]].reshape(1, 8)  # self-intersecting order
    assert G.poly_iou(bow, square(0, 0, 2))[0] == pytest.approx(1.0)


def test_iou_matrix_matches_pairwise_and_hbb_prefilter():
    rng = np.random.default_rng(4)
    a = G.obb_to_poly(np.c_[rng.uniform(0, 100, (40, 2)), rng.uniform(1, 30, (40, 2)), rng.uniform(0, 3, 40)])
    b = G.obb_to_poly(np.c_[rng.uniform(0, 100, (30, 2)), rng.uniform(1, 30, (30, 2)), rng.uniform(0, 3, 30)])
    m = G.poly_iou_matrix(a, b)
    assert m.shape == (40, 30)
    ii, jj = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    full = G.poly_iou(a[ii.ravel()], b[jj.ravel()]).reshape(40, 30)
    np.testing.assert_allclose(m, full, atol=1e-12)
    assert G.poly_iou_matrix(a[:0], b).shape == (0, 30)


# ---------------------------------------------------------------- NMS


def nms_reference(poly: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Slow and obvious: visit boxes by score, keep one unless it overlaps a kept one too much."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(G.poly_iou(poly[i:i + 1], poly[k:k + 1])[0] <= thr for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thr", [0.1, 0.5])
def test_rotated_nms_matches_reference(seed, thr):
    rng = np.random.default_rng(seed)
    n = 80
    obb = np.c_[rng.uniform(0, 120, (n, 2)), rng.uniform(5, 40, (n, 2)), rng.uniform(0, np.pi, n)]
    poly = G.obb_to_poly(obb)
    scores = rng.uniform(size=n).round(2)  # ties on purpose
    assert G.rotated_nms(poly, scores, thr).tolist() == nms_reference(poly, scores, thr)


def test_rotated_nms_per_class_keeps_other_classes():
    p = np.concatenate([square(0, 0, 10), square(0, 0, 10), square(1, 0, 10)])
    keep = G.rotated_nms_per_class(p, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), 0.5)
    assert keep.tolist() == [0, 1]
    assert G.rotated_nms(p[:0], np.zeros(0), 0.5).tolist() == []


def test_iou_of_near_identical_thin_boxes_is_one():
    """Regression: GEOS's overlay returned a MULTIPOINT (IoU 0) for a 100 x 1 box at 89.9 degrees
    and its copy rebuilt through poly_to_obb (1e-14 px apart)."""
    obb = np.array([[50.0, 60.0, 100.0, 1.0, math.radians(89.9)]])
    a = G.obb_to_poly(obb)
    b = G.obb_to_poly(G.poly_to_obb(a))
    assert G.poly_iou(a, b)[0] == pytest.approx(1.0, abs=1e-6)
    assert G.poly_iou_matrix(a, b)[0, 0] == pytest.approx(1.0, abs=1e-6)
