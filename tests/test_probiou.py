"""ProbIoU box distance: hand-derived Gaussians, a numpy reference, invariances and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bbavectors.geometry import obb_to_tlrb
from bbavectors.losses import masked_probiou_distance
from bbavectors.probiou import VARIANCE_FLOOR, gaussian_rectangle, hellinger_distance, tlrb_gaussian


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


# ------------------------------------------------------------------------------ gaussian_rectangle
def _corners(center: torch.Tensor, tlrb: torch.Tensor) -> torch.Tensor:
    from bbavectors.geometry import tlrb_to_poly

    return tlrb_to_poly(center, tlrb).reshape(-1, 4, 2)


def _same_corners(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    """Both ``(4, 2)`` corner sets hold the same points, in any order."""
    return bool(torch.cdist(a.double(), b.double()).min(dim=1).values.max() < atol)


def test_gaussian_rectangle_of_the_docstring_rhombus_is_the_box() -> None:
    # Half edges p = (L, -W)/sqrt(2), q = (L, W)/sqrt(2) with L = 4, W = 1.5: the corners c + t + l ...
    # of t = p, b = -p, r = q, l = -q are the diamond (0, -2.83), (5.66, 0), (0, 2.83), (-5.66, 0)
    # (half diagonals sqrt(2) L and sqrt(2) W), whose Gaussian is the 8 x 3 box's.
    s = math.sqrt(2)
    p = torch.tensor([4 / s, -1.5 / s], dtype=torch.float64)
    q = torch.tensor([4 / s, 1.5 / s], dtype=torch.float64)
    diamond = torch.stack([p, q, -p, -q])
    centre = torch.tensor([10.0, 20.0], dtype=torch.float64)
    diamond_corners = torch.tensor([[0, -1.5 * s], [4 * s, 0], [0, 1.5 * s], [-4 * s, 0]],
                                   dtype=torch.float64)
    assert _same_corners(_corners(centre, diamond)[0] - centre, diamond_corners)
    new_centre, vectors = gaussian_rectangle(centre, diamond)
    assert new_centre.tolist() == [10.0, 20.0]
    torch.testing.assert_close(vectors, _axis_aligned(8, 3))
    assert _same_corners(_corners(new_centre, vectors)[0],
                         torch.tensor([[6, 18.5], [14, 18.5], [14, 21.5], [6, 21.5]], dtype=torch.float64))


@pytest.mark.parametrize("angle", [0.0, 0.3, -0.7, math.pi / 2 - 0.01, 1.2, math.pi / 2])
def test_gaussian_rectangle_keeps_a_rectangle(angle: float) -> None:
    obb = torch.tensor([[3.0, -2.0, 12.0, 5.0, angle], [0.0, 0.0, 5.0, 12.0, angle]], dtype=torch.float64)
    centre = obb[:, :2]
    vectors = obb_to_tlrb(obb)
    new_centre, new_vectors = gaussian_rectangle(centre, vectors)
    torch.testing.assert_close(new_centre, centre)
    for k in range(2):
        assert _same_corners(_corners(new_centre, new_vectors)[k], _corners(centre, vectors)[k])
    # The long side is r - l, the short side b - t, and the two are perpendicular.
    t, r, b, l = new_vectors.unbind(-2)
    torch.testing.assert_close((r - l).norm(dim=-1), torch.full((2,), 12.0, dtype=torch.float64))
    torch.testing.assert_close((b - t).norm(dim=-1), torch.full((2,), 5.0, dtype=torch.float64))
    torch.testing.assert_close(((r - l) * (b - t)).sum(-1), torch.zeros(2, dtype=torch.float64))


def test_gaussian_rectangle_matches_an_eigendecomposition() -> None:
    """The closed form against torch.linalg.eigh on random parallelograms (the slow reference)."""
    gen = torch.Generator().manual_seed(0)
    centre = torch.randn(200, 2, generator=gen, dtype=torch.float64) * 10
    vectors = torch.randn(200, 4, 2, generator=gen, dtype=torch.float64) * 6
    new_centre, new_vectors = gaussian_rectangle(centre, vectors)
    mean, cov = tlrb_gaussian(centre, vectors)
    torch.testing.assert_close(new_centre, mean)
    _, new_cov = tlrb_gaussian(new_centre, new_vectors)
    torch.testing.assert_close(new_cov, cov)
    eigenvalues, _ = torch.linalg.eigh(cov)
    t, r, b, l = new_vectors.unbind(-2)
    torch.testing.assert_close((r - l).norm(dim=-1) / 2, torch.sqrt(3 * eigenvalues[:, 1]))
    torch.testing.assert_close((b - t).norm(dim=-1) / 2, torch.sqrt(3 * eigenvalues[:, 0].clamp_min(0)),
                               atol=1e-6, rtol=1e-6)
    assert float(((r - l) * (b - t)).sum(-1).abs().max()) < 1e-8


def test_gaussian_rectangle_of_collapsed_vectors_is_a_point() -> None:
    new_centre, new_vectors = gaussian_rectangle(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 4, 2))
    assert new_centre.tolist() == [[1.0, 2.0]]
    assert torch.isfinite(new_vectors).all() and float(new_vectors.abs().max()) == 0.0
