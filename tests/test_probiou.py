"""ProbIoU box distance: hand-derived Gaussians, a numpy reference, invariances and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bbavectors.geometry import obb_to_tlrb
from bbavectors.losses import masked_probiou_distance
from bbavectors.probiou import VARIANCE_FLOOR, hellinger_distance, tlrb_gaussian


def _axis_aligned(w: float, h: float) -> torch.Tensor:
    return torch.tensor([[0.0, -h / 2], [w / 2, 0.0], [0.0, h / 2], [-w / 2, 0.0]], dtype=torch.float64)


def test_worked_example_axis_aligned_box_is_uniform_segments() -> None:
    mean, cov = tlrb_gaussian(torch.tensor([1.0, 2.0], dtype=torch.float64), _axis_aligned(8, 4))
    assert mean.tolist() == [1.0, 2.0]
    assert torch.allclose(cov, torch.tensor([[64 / 12, 0.0], [0.0, 16 / 12]], dtype=torch.float64))


def test_rotated_box_covariance_is_the_rotated_diagonal() -> None:
    angle = 0.6
    obb = torch.tensor([[0.0, 0.0, 10.0, 4.0, angle]], dtype=torch.float64)
    _, cov = tlrb_gaussian(torch.zeros(1, 2, dtype=torch.float64), obb_to_tlrb(obb))
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                       dtype=torch.float64)
    expected = rot @ torch.diag(torch.tensor([100 / 12, 16 / 12], dtype=torch.float64)) @ rot.T
    assert torch.allclose(cov[0], expected)


def test_mean_follows_the_decoded_parallelogram_not_the_cell() -> None:
    vectors = _axis_aligned(8, 4)
    vectors[1] += torch.tensor([2.0, 0.0], dtype=torch.float64)  # r pushed right: box grows to the right
    mean, _ = tlrb_gaussian(torch.zeros(2, dtype=torch.float64), vectors)
    assert mean.tolist() == [1.0, 0.0]


def test_identical_boxes_are_at_distance_zero() -> None:
    mean, cov = tlrb_gaussian(torch.zeros(2, dtype=torch.float64), _axis_aligned(8, 4))
    assert float(hellinger_distance(mean, cov, mean, cov)) < 1e-5


def test_pure_shift_matches_the_one_dimensional_formula() -> None:
    # Equal covariances: B = dx^2 / (8 var_x); H = sqrt(1 - exp(-B)).
    mean, cov = tlrb_gaussian(torch.zeros(2, dtype=torch.float64), _axis_aligned(8, 4))
    var_x = 64 / 12 + VARIANCE_FLOOR
    expected = math.sqrt(1 - math.exp(-(1.5 ** 2) / (8 * var_x)))
    got = hellinger_distance(mean + torch.tensor([1.5, 0.0], dtype=torch.float64), cov, mean, cov)
    assert float(got) == pytest.approx(expected, rel=1e-9)


def _reference(m1: np.ndarray, c1: np.ndarray, m2: np.ndarray, c2: np.ndarray) -> float:
    c1 = c1 + np.eye(2) * VARIANCE_FLOOR
    c2 = c2 + np.eye(2) * VARIANCE_FLOOR
    s = (c1 + c2) / 2
    d = m1 - m2
    log_dets = math.log(np.linalg.det(s) / math.sqrt(np.linalg.det(c1) * np.linalg.det(c2)))
    b = d @ np.linalg.inv(s) @ d / 8 + 0.5 * log_dets
    return math.sqrt(1 - math.exp(-b))


def test_matches_a_matrix_reference_on_random_boxes() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 200
    obb1 = torch.cat([torch.rand(n, 2, generator=gen, dtype=torch.float64) * 4,
                      1 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 10,
                      torch.rand(n, 1, generator=gen, dtype=torch.float64) * math.pi], dim=1)
    obb2 = obb1 + torch.randn(n, 5, generator=gen, dtype=torch.float64) * torch.tensor([1, 1, 1, 1, 0.3])
    obb2[:, 2:4] = obb2[:, 2:4].abs() + 0.5
    m1, c1 = tlrb_gaussian(obb1[:, :2], obb_to_tlrb(obb1))
    m2, c2 = tlrb_gaussian(obb2[:, :2], obb_to_tlrb(obb2))
    got = hellinger_distance(m1, c1, m2, c2)
    want = [_reference(m1[i].numpy(), c1[i].numpy(), m2[i].numpy(), c2[i].numpy()) for i in range(n)]
    assert np.allclose(got.numpy(), want, rtol=1e-7, atol=1e-9)


def test_relabelled_vectors_give_the_same_box() -> None:
    obb = torch.tensor([[0.0, 0.0, 9.0, 3.0, 0.02]], dtype=torch.float64)
    vectors = obb_to_tlrb(obb)[0]
    other = torch.tensor([[0.0, 0.0, 9.0, 3.0, 0.1]], dtype=torch.float64)
    m2, c2 = tlrb_gaussian(torch.zeros(2, dtype=torch.float64), obb_to_tlrb(other)[0])
    distances = []
    for shift in range(4):
        m1, c1 = tlrb_gaussian(torch.zeros(2, dtype=torch.float64), vectors.roll(shift, dims=0))
        distances.append(float(hellinger_distance(m1, c1, m2, c2)))
    assert max(distances) - min(distances) < 1e-12


def test_distance_is_relative_to_box_size() -> None:
    # The same relative error on a small and a 10x larger box: about the same distance (unlike L1).
    small = _axis_aligned(9, 3)
    big = small * 10
    shift = torch.tensor([0.5, 0.0], dtype=torch.float64)
    m, c = tlrb_gaussian(torch.zeros(2, dtype=torch.float64), small)
    mb, cb = tlrb_gaussian(torch.zeros(2, dtype=torch.float64), big)
    d_small = float(hellinger_distance(m + shift, c, m, c))
    d_big = float(hellinger_distance(mb + 10 * shift, cb, mb, cb))
    assert d_small == pytest.approx(d_big, rel=1e-3)
    assert float(hellinger_distance(mb + shift, cb, mb, cb)) < d_small / 5


def test_collapsed_prediction_has_a_finite_gradient_that_grows_it() -> None:
    # Nearly collapsed vectors, as a freshly initialised head predicts (exactly 0 is a saddle).
    pred = (0.01 * torch.randn(4, 2, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    m_t, c_t = tlrb_gaussian(torch.zeros(2), _axis_aligned(9, 3).float())
    m_p, c_p = tlrb_gaussian(torch.zeros(2), pred)
    distance = hellinger_distance(m_p, c_p, m_t, c_t)
    distance.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert 0.9 < float(distance.detach()) <= 1.0
    # A small step along the negative gradient reduces the distance.
    with torch.no_grad():
        stepped = pred - 0.1 * pred.grad / pred.grad.norm()
        new = hellinger_distance(*tlrb_gaussian(torch.zeros(2), stepped), m_t, c_t)
    assert float(new) < float(distance.detach())


def test_masked_loss_ignores_invalid_slots_and_is_zero_without_objects() -> None:
    target_wh = torch.zeros(1, 3, 10)
    target_wh[0, 0, :8] = _axis_aligned(9, 3).float().reshape(8)
    target_reg = torch.full((1, 3, 2), 0.5)
    mask = torch.tensor([[True, False, False]])
    pred_wh = target_wh.clone()
    pred_wh[0, 1:] = 123.0  # garbage in unused slots must not count
    loss = masked_probiou_distance(target_reg, pred_wh, target_reg, target_wh, mask)
    assert float(loss) < 1e-5
    nothing = torch.zeros(1, 3, dtype=torch.bool)
    none = masked_probiou_distance(target_reg, pred_wh, target_reg, target_wh, nothing)
    assert float(none) == 0.0
    pred_wh[0, 0, 2] += 1.0  # r longer: a looser box counts
    assert float(masked_probiou_distance(target_reg, pred_wh, target_reg, target_wh, mask)) > 0.05
