r"""ProbIoU: a differentiable, scale-free distance between two decoded BBAVectors boxes.

The smooth L1 on the ``t, r, b, l`` vectors is measured in output cells: half a cell of error is
in the loss's quadratic zone (a tiny gradient) yet, on a 35 x 13 px ship (9 x 3 cells), enough to
drop the polygon IoU below 0.5. ProbIoU (Llerena et al., 2021; also YOLO-OBB's box loss) compares
boxes as 2-D Gaussians, so its error is relative to the box's size and the angle enters through
the covariance.

**The Gaussian of a decoded box.** The corners ``c + t + l``, ``c + t + r``, ``c + b + r``,
``c + b + l`` always form a parallelogram (its edges are ``r - l`` and ``b - t``) whatever the four
predicted vectors. With the half edges ``p = (t - b) / 2`` and ``q = (r - l) / 2``, the uniform
distribution over it has::

    mean = c + (t + r + b + l) / 2
    cov  = (p p^T + q q^T) / 3

Worked example: an axis-aligned box 8 wide and 4 high centred at the origin has ``t = (0, -2)``,
``r = (4, 0)``, ``b = (0, 2)``, ``l = (-4, 0)``: ``p = (0, -2)``, ``q = (4, 0)``, so
``cov = diag(16, 4) / 3 = diag(8^2, 4^2) / 12``, the variance of a uniform segment of length 8
and of length 4. A cyclic relabelling of the vectors (``r, b, l, t``) only changes the signs of
``p`` and ``q``: the same Gaussian, so the distance has no labelling jump at axis alignment.

**The distance.** With ``S = (cov1 + cov2) / 2`` and ``d = mean1 - mean2``, the Bhattacharyya
distance ``B = d^T S^-1 d / 8 + ln(det S / sqrt(det cov1 det cov2)) / 2`` and the Hellinger distance
``H = sqrt(1 - exp(-B))`` in ``[0, 1]``: 0 for identical boxes. ``1 - H`` is the "ProbIoU".

**Blind to the parallelogram's shape, hence** :func:`gaussian_rectangle`. Many parallelograms share
one Gaussian: the rhombus with half edges ``p = (L, -W) / sqrt(2)`` and ``q = (L, W) / sqrt(2)`` has
``p p^T + q q^T = diag(L^2, W^2)``, the covariance of the axis-aligned ``2L x 2W`` rectangle. A
network trained with ProbIoU (and a smooth L1 whose vector labelling jumps at axis alignment) may
predict that rhombus, at no ProbIoU cost, for a near-axis ship: its corners ``c + t + l`` ... are a
diamond with polygon IoU about 0.5 against the ship. :func:`gaussian_rectangle` decodes the
rectangle whose Gaussian is the prediction's (same mean, same covariance): the eigenvectors of
``cov`` are its axes and ``sqrt(3 * eigenvalue)`` its half sides. The rhombus above gives back the
``2L x 2W`` rectangle; a prediction that is already a rectangle is returned unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["VARIANCE_FLOOR", "tlrb_gaussian", "hellinger_distance", "gaussian_rectangle",
           "covariance_rectangle", "covariance_direction", "direction_rectangle", "direction_covariance"]

#: Added to both variances (squared units of the input): a collapsed prediction (all vectors 0,
#: as at initialisation) keeps a finite log-determinant, hence a gradient that grows it back.
VARIANCE_FLOOR = 1e-3


def tlrb_gaussian(center: Tensor, tlrb: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and covariance of the parallelogram decoded from a centre and its t, r, b, l vectors.

    Args:
        center: ``(..., 2)`` centres (x, y).
        tlrb: ``(..., 4, 2)`` vectors ``t, r, b, l`` relative to the centre.
    Returns:
        ``mean (..., 2)`` and ``cov (..., 2, 2)`` (symmetric, positive semi-definite), in the
        input's units.
    """
    t, r, b, l = tlrb.unbind(-2)
    mean = center + (t + r + b + l) / 2
    p = (t - b) / 2
    q = (r - l) / 2
    cov = (p[..., :, None] * p[..., None, :] + q[..., :, None] * q[..., None, :]) / 3
    return mean, cov


def _det2(m: Tensor) -> Tensor:
    """Determinants of ``(..., 2, 2)`` symmetric matrices, written out (no LU, exact for 2 x 2)."""
    return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 0, 1]


def hellinger_distance(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> Tensor:
    """Hellinger distance between 2-D Gaussians (module docstring), ``1 - ProbIoU``.

    Args:
        mean1, mean2: ``(..., 2)``; cov1, cov2: ``(..., 2, 2)`` symmetric positive semi-definite.
    Returns:
        ``(...)`` in ``[0, 1]``; computed in float32 at least; :data:`VARIANCE_FLOOR` is added to
        both covariances' diagonals.
    """
    dtype = torch.promote_types(mean1.dtype, torch.float32)
    eye = torch.eye(2, dtype=dtype, device=mean1.device) * VARIANCE_FLOOR
    c1 = cov1.to(dtype) + eye
    c2 = cov2.to(dtype) + eye
    s = (c1 + c2) / 2
    a, b, c = s[..., 0, 0], s[..., 1, 1], s[..., 0, 1]
    det_s = _det2(s)
    d = mean1.to(dtype) - mean2.to(dtype)
    dx, dy = d[..., 0], d[..., 1]
    mahalanobis = (b * dx * dx - 2 * c * dx * dy + a * dy * dy) / det_s
    det1 = _det2(c1).clamp_min(VARIANCE_FLOOR ** 2)
    det2 = _det2(c2).clamp_min(VARIANCE_FLOOR ** 2)
    bhattacharyya = mahalanobis / 8 + 0.5 * (torch.log(det_s) - 0.5 * (torch.log(det1) + torch.log(det2)))
    # B >= 0 in exact arithmetic; rounding can dip below, and sqrt'(0) is infinite: a tiny floor.
    return torch.sqrt((1 - torch.exp(-bhattacharyya)).clamp_min(1e-12))


def gaussian_rectangle(center: Tensor, tlrb: Tensor) -> tuple[Tensor, Tensor]:
    """The rectangle with the same Gaussian as the parallelogram of ``center`` and ``tlrb`` (module
    docstring), as a centre and ``t, r, b, l`` vectors again.

    Closed form for the 2 x 2 eigenproblem, with elementary operations only (sqrt, where; no
    atan2, no eigh), so that it exports to ONNX inside the decoder. With ``cov = [[a, k], [k, d]]``:
    ``lambda = (a + d) / 2 +- rho``, ``rho = sqrt(((a - d) / 2)^2 + k^2)``; the long axis
    ``u = (cos phi, sin phi)`` with ``cos 2 phi = (a - d) / (2 rho)`` and ``sin phi`` of the sign of
    ``k``; ``v = (-sin phi, cos phi)``. The vectors are ``t = -B v``, ``r = A u``, ``b = B v``,
    ``l = -A u`` with half sides ``A = sqrt(3 lambda_1) >= B = sqrt(3 lambda_2)``: their corners
    (:func:`bbavectors.geometry.tlrb_to_poly`) are those of the rectangle, ``t`` points to image-up
    for an axis-aligned box (``phi = 0``) and a square's axes (``rho = 0``) are the image axes.

    Args:
        center: ``(..., 2)`` centres; tlrb: ``(..., 4, 2)`` predicted vectors.
    Returns:
        ``center (..., 2)`` (the parallelogram's centre ``c + (t + r + b + l) / 2``) and
        ``tlrb (..., 4, 2)``, in the input's dtype.
    """
    mean, cov = tlrb_gaussian(center, tlrb)
    return mean, covariance_rectangle(cov)


def covariance_rectangle(cov: Tensor) -> Tensor:
    """The ``t, r, b, l`` vectors of the rectangle centred at the origin whose uniform distribution has
    covariance ``cov`` (the closed form of :func:`gaussian_rectangle`).

    It is :func:`direction_rectangle` along the long axis of ``cov`` itself
    (:func:`covariance_direction`): the spreads along the eigenvectors are the eigenvalues.

    Args:
        cov: ``(..., 2, 2)`` symmetric positive semi-definite.
    Returns:
        ``(..., 4, 2)`` vectors, in ``cov``'s dtype (units: the square root of ``cov``'s).
    """
    return direction_rectangle(cov, covariance_direction(cov)[0])


def _axes_vectors(u: Tensor, v: Tensor, half_long: Tensor, half_short: Tensor) -> Tensor:
    """``t = -B v``, ``r = A u``, ``b = B v``, ``l = -A u`` as ``(..., 4, 2)`` from the axes ``u, v``
    ``(..., 2)`` and the half sides ``A, B`` ``(...)``."""
    a, b = half_long[..., None], half_short[..., None]
    return torch.stack([-b * v, a * u, b * v, -a * u], dim=-2)


def covariance_direction(cov: Tensor) -> tuple[Tensor, Tensor]:
    """The long axis of ``cov`` as the doubled-angle unit vector ``(cos 2 phi, sin 2 phi)``.

    Doubling the angle makes the direction of an undirected axis continuous: ``phi`` and
    ``phi + 180`` degrees are the same axis and the same ``2 phi`` (the angle head's target).
    With ``cov = [[a, k], [k, d]]``: ``(cos 2 phi, sin 2 phi) = (a - d, 2 k) / (2 rho)``,
    ``rho = sqrt(((a - d) / 2)^2 + k^2)`` (:func:`covariance_rectangle`). Worked example: a box 8
    wide and 4 high turned by 30 degrees has ``2 phi = 60`` degrees: ``(0.5, 0.866)``.

    Args:
        cov: ``(..., 2, 2)`` symmetric positive semi-definite.
    Returns:
        ``direction (..., 2)`` (``(1, 0)`` where the axis is undefined) and ``defined (...)`` bool:
        False for an isotropic ``cov`` (a square's axis is any).
    """
    a, d, k = cov[..., 0, 0], cov[..., 1, 1], cov[..., 0, 1]
    half_diff = (a - d) / 2
    rho = torch.sqrt(half_diff * half_diff + k * k)
    defined = rho > 1e-6 * (a + d).abs().clamp_min(1e-12)
    safe = rho.clamp_min(1e-12)
    direction = torch.stack([torch.where(defined, half_diff / safe, torch.ones_like(rho)),
                             torch.where(defined, k / safe, torch.zeros_like(rho))], dim=-1)
    return direction, defined


def direction_rectangle(cov: Tensor, direction: Tensor) -> Tensor:
    """The rectangle along a given axis with the second moments of ``cov`` along it, as ``t, r, b,
    l`` vectors centred at the origin (the angle head's decode, :mod:`bbavectors.decode`).

    ``direction`` ``(c, s)`` is any non-zero multiple of ``(cos 2 phi, sin 2 phi)``; the axes are
    ``u = (cos phi, sin phi)``, ``v = (-sin phi, cos phi)`` (closed form, sqrt and where only, so it
    exports to ONNX) and the half sides ``A = sqrt(3 u^T cov u)``, ``B = sqrt(3 v^T cov v)``: a
    rectangle's own covariance with its own direction gives that rectangle back, and a direction
    off the Gaussian's axis gives the rectangle whose sides have the Gaussian's spread along it. A
    zero direction reads as ``phi = 0``.

    Args:
        cov: ``(..., 2, 2)`` symmetric positive semi-definite; direction: ``(..., 2)``.
    Returns:
        ``(..., 4, 2)`` vectors, in ``cov``'s dtype.
    """
    c, s = direction[..., 0], direction[..., 1]
    norm = torch.sqrt(c * c + s * s)
    cos_2phi = torch.where(norm > 1e-12, c / norm.clamp_min(1e-12), torch.ones_like(norm))
    cos_phi = torch.sqrt(((1 + cos_2phi) / 2).clamp_min(0.0))
    sin_phi = torch.sqrt(((1 - cos_2phi) / 2).clamp_min(0.0))
    sin_phi = torch.where(s < 0, -sin_phi, sin_phi)
    u = torch.stack([cos_phi, sin_phi], dim=-1)
    v = torch.stack([-sin_phi, cos_phi], dim=-1)
    along = (u[..., :, None] * cov * u[..., None, :]).sum((-2, -1))
    across = (v[..., :, None] * cov * v[..., None, :]).sum((-2, -1))
    half_long = torch.sqrt((3 * along).clamp_min(0.0))
    return _axes_vectors(u, v, half_long, torch.sqrt((3 * across).clamp_min(0.0)))


def direction_covariance(cov: Tensor, direction: Tensor) -> Tensor:
    """The covariance of :func:`direction_rectangle`'s rectangle, differentiable in both arguments
    (the angle head's box in the ProbIoU loss, ``loss.angle_probiou``).

    With ``U = u u^T = [[1 + c, s], [s, 1 - c]] / 2`` for the normalised ``(c, s) = (cos 2 phi,
    sin 2 phi)`` (no square roots of the angle, so the gradient is finite at every angle):
    ``tr(cov U) U + tr(cov (I - U)) (I - U)``, ``cov`` with its spread kept along ``u`` and ``v`` and
    its cross term in that frame dropped.

    Args:
        cov: ``(..., 2, 2)``; direction: ``(..., 2)``, not zero (a zero direction reads as ``phi = 0``).
    Returns:
        ``(..., 2, 2)``.
    """
    c, s = direction[..., 0], direction[..., 1]
    norm = torch.sqrt(c * c + s * s + 1e-12)
    c, s = c / norm, s / norm
    along_u = torch.stack([torch.stack([1 + c, s], -1), torch.stack([s, 1 - c], -1)], -2) / 2
    along_v = torch.eye(2, dtype=cov.dtype, device=cov.device) - along_u
    spread_u = (cov * along_u).sum((-2, -1))
    spread_v = (cov * along_v).sum((-2, -1))
    return spread_u[..., None, None] * along_u + spread_v[..., None, None] * along_v
