"""The torch twin (bbavectors.geometry) against the numpy conventions and shapely."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bbavectors import geometry as T
from DOTA_devkit import geometry as G


def random_obbs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(0, 300, (n, 2)), rng.uniform(1, 120, (n, 2)), rng.uniform(0, np.pi, n)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_obb_poly_round_trip_matches_numpy(dtype):
    obb = random_obbs(400, 0)
    poly = G.obb_to_poly(obb)
    tol = 1e-9 if dtype == torch.float64 else 2e-3
    np.testing.assert_allclose(T.obb_to_poly(torch.tensor(obb, dtype=dtype)).numpy(), poly, atol=tol)
    got = T.poly_to_obb(torch.tensor(poly, dtype=dtype)).double().numpy()
    ref = G.poly_to_obb(poly)
    np.testing.assert_allclose(got[:, :4], ref[:, :4], atol=tol * 10)
    d = np.abs(got[:, 4] - ref[:, 4])
    assert np.all(np.minimum(d, np.pi - d) < tol * 10)


def test_tlrb_matches_numpy_including_boundaries():
    obb = random_obbs(300, 1)
    obb[:40, 4] = np.radians(np.repeat([0, 45, 90, 135], 10))
    ref = G.obb_to_tlrb(obb)
    got = T.obb_to_tlrb(torch.tensor(obb)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-9)
    poly = T.tlrb_to_poly(torch.tensor(obb[:, :2]), torch.tensor(got)).numpy()
    np.testing.assert_allclose(poly, G.tlrb_to_poly(obb[:, :2], ref), atol=1e-9)


def test_tlrb_float32_boundary_is_deterministic():
    obb = torch.tensor([[0.0, 0.0, 40.0, 20.0, 0.0], [0.0, 0.0, 40.0, 20.0, math.pi / 2]])
    tlrb = T.obb_to_tlrb(obb)
    # t straight up for both axis-aligned boxes.
    assert torch.allclose(tlrb[:, 0, 0], torch.zeros(2), atol=1e-5)
    assert (tlrb[:, 0, 1] < 0).all()


def test_horizontal_iou_matches_numpy():
    obb = random_obbs(200, 2)
    np.testing.assert_allclose(T.horizontal_iou(torch.tensor(obb)).numpy(), G.horizontal_iou(obb), atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_convex_iou_matches_shapely(seed):
    a, b = random_obbs(600, seed), random_obbs(600, seed + 10)
    b[:300] = a[:300] + np.random.default_rng(seed).normal(0, [5, 5, 3, 3, 0.3], (300, 5))
    b[:, 2:4] = np.abs(b[:, 2:4]) + 0.5
    pa, pb = G.obb_to_poly(a), G.obb_to_poly(b)
    ref = G.poly_iou(pa, pb)
    got = T.poly_iou(torch.tensor(pa), torch.tensor(pb)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-9)
    m = T.poly_iou_matrix(torch.tensor(pa[:50]), torch.tensor(pb[:70])).numpy()
    np.testing.assert_allclose(m, G.poly_iou_matrix(pa[:50], pb[:70]), atol=1e-9)


def test_convex_iou_hand_values():
    s = torch.tensor([[-1.0, -1, 1, -1, 1, 1, -1, 1]], dtype=torch.float64)
    shifted = s + torch.tensor([1.0, 0] * 4, dtype=torch.float64)
    assert T.poly_iou(s, shifted).item() == pytest.approx(1 / 3)
    r = T.obb_to_poly(torch.tensor([[0.0, 0, 2, 2, math.pi / 4]], dtype=torch.float64))
    assert T.poly_iou(s, r).item() == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    ccw = s.reshape(4, 2)[[0, 3, 2, 1]].reshape(1, 8)
    assert T.poly_iou(ccw, s).item() == pytest.approx(1.0)
    degenerate = torch.zeros(1, 8, dtype=torch.float64)
    v = T.poly_iou(degenerate, s)
    assert v.item() == 0.0 and not torch.isnan(v).any()


def test_rotated_nms_per_class_matches_numpy():
    rng = np.random.default_rng(5)
    obb = np.c_[rng.uniform(0, 150, (300, 2)), rng.uniform(5, 40, (300, 2)), rng.uniform(0, np.pi, 300)]
    poly = G.obb_to_poly(obb)
    scores = rng.uniform(size=300)
    classes = rng.integers(0, 4, 300)
    for thr in (0.1, 0.3, 0.7):
        ref = G.rotated_nms_per_class(poly, scores, classes, thr)
        got = T.rotated_nms_per_class(torch.tensor(poly), torch.tensor(scores), torch.tensor(classes), thr)
        assert got.tolist() == ref.tolist()
    empty = T.rotated_nms_per_class(torch.zeros(0, 8), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.1)
    assert empty.numel() == 0


def test_gradients_flow_through_poly_to_obb_free_ops():
    obb = torch.tensor([[10.0, 10.0, 8.0, 4.0, 0.3]], requires_grad=True)
    T.obb_to_poly(obb).sum().backward()
    assert obb.grad is not None and torch.isfinite(obb.grad).all()


def test_both_twins_use_the_same_names():
    # One name per operation in numpy and torch (the table in both module docstrings).
    assert sorted(T.__all__) == sorted(G.__all__)
    for name in T.__all__:
        assert f"``{name}``" in (T.__doc__ or "") and f"``{name}``" in (G.__doc__ or ""), name


def test_signed_area_and_corner_order_match_numpy():
    poly = G.obb_to_poly(random_obbs(50, 7))
    poly[::2] = poly[::2].reshape(-1, 4, 2)[:, [0, 3, 2, 1]].reshape(-1, 8)  # every other row turned ccw
    np.testing.assert_allclose(T.poly_signed_area(torch.tensor(poly)).numpy(), G.poly_signed_area(poly))
    np.testing.assert_allclose(T.poly_area(torch.tensor(poly)).numpy(), G.poly_area(poly))
    got = T.normalize_corner_order(torch.tensor(poly)).numpy()
    np.testing.assert_array_equal(got, G.normalize_corner_order(poly))
    assert (G.poly_signed_area(got) > 0).all()
