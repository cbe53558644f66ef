r"""Test-time augmentation: the network run on flipped and turned copies of its square input, its
outputs mapped back onto the original grid and averaged there, then decoded once.

Why on the maps, not on the boxes: the decoder reads one box per heatmap peak, and the copies'
boxes for one ship differ mostly in their angle and sides (a small ship's vectors are under a cell
long: an error of 0.2 cells is 10 degrees). Averaged per cell, before the decode, each ship's box is
the mean of its copies' boxes and there is nothing to match or fuse afterwards (no weighted box
fusion, no NMS across copies).

**Views.** A view is ``k`` quarter turns after an optional horizontal flip of the whole ``S x S``
input (``torch.rot90(x, k, dims=(-2, -1))``); ``"flips"`` is the identity, the horizontal flip,
the vertical flip and both (``k = 0, 2`` with and without the flip), ``"dihedral"`` all eight.
The network was trained with the same flips and quarter turns, so every view is one it knows.
``S`` must be a multiple of the output stride ``d`` (512 / 4), and the grid the original one
(``model.align_grid: false``; the aligned grid's 1.5 px offset is not symmetric under a flip): the
views then map output cells exactly onto output cells.

**Mapping a view's outputs back.** In continuous input pixels (pixel ``i`` centred at ``i + 0.5``)
the horizontal flip is ``(x, y) -> (S - x, y)`` and a quarter turn ``(x, y) -> (y, S - x)``; a
view is ``p' = A p + s`` with ``A`` a signed permutation matrix. Per output cell of the view:

* heatmap: probabilities, moved back to their cells;
* centre: ``P' = (cell + reg) d - o`` (``o`` the grid offset) mapped by ``A^T (P' - s)`` (``A^-1 =
  A^T``), moved back, then written as an offset from its new cell again;
* vectors: as the Gaussian of their parallelogram (:func:`bbavectors.probiou.tlrb_gaussian`: mean
  offset ``m`` and covariance ``C``), which does not depend on how the four vectors are labelled
  (a flip reverses their order): ``m = A^T m'``, ``C = A^T C' A``;
* external box ``(w, h)``: swapped by an odd number of quarter turns; ``cls_theta`` as it is;
* the angle head's ``(c, s) = (cos 2 phi, sin 2 phi)`` (``model.angle_head``), as the symmetric
  matrix ``[[c, s], [s, -c]]`` (``2 u u^T - I`` for the axis ``u``), mapped like ``C``.

**Averaging and the merged outputs.** Probabilities, centres, ``m``, ``C``, external boxes,
``cls_theta`` logits and angle directions are averaged over the views, and written back as ordinary
head outputs: ``hm`` the logit of the mean probability, ``reg`` the mean centre's offset, ``wh[0:8]``
the rectangle of the mean covariance (:func:`bbavectors.probiou.covariance_rectangle`) with
``m / 2`` added to each vector (which moves the box's centre by ``m``), ``wh[8:10]`` the mean
external box, ``angle`` the mean direction. Any decoder reads them as it reads one network's
outputs; the rotated boxes come out as rectangles.

Worked example (``S = 8``, ``d = 4``, a 2 x 2 output grid, the horizontal flip, ``o = 0``): a ship
at ``x = 2.6`` px sits in cell column 0 with ``reg_x = 0.65``. In the flipped input it is at
``8 - 2.6 = 5.4`` px: column 1, ``reg_x' = 0.35``. Mapping back: ``P' = (1 + 0.35) * 4 = 5.4``,
``8 - 5.4 = 2.6``, and the flipped map's column 1 moves to column 0 (``torch.flip``): ``reg_x =
2.6 / 4 - 0 = 0.65`` again. A vector ``r' = (3, 1)`` px becomes ``(-3, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..probiou import covariance_rectangle, tlrb_gaussian

__all__ = ["TTA_MODES", "View", "views_for", "apply_view", "view_back", "check_grid", "merge_view_outputs"]

#: ``"none"``: the input as it is; ``"flips"``: 4 views; ``"dihedral"``: 8 views (module docstring).
TTA_MODES = ("none", "flips", "dihedral")

#: Logit clamp for averaged probabilities (a probability of exactly 0 or 1 has no finite logit).
_PROB_EPS = 1e-6


@dataclass(frozen=True)
class View:
    """``quarter_turns`` (``k`` of ``torch.rot90(x, k, dims=(-2, -1))``) after an optional ``hflip``."""

    quarter_turns: int = 0
    hflip: bool = False

    def matrix(self) -> tuple[Tensor, Tensor]:
        """``A (2, 2)`` and ``s`` in units of the side ``S`` ``(2,)``: the view maps an input point
        ``p`` to ``A p + s * S`` (float32)."""
        a = torch.eye(2)
        s = torch.zeros(2)
        if self.hflip:
            a = torch.tensor([[-1.0, 0.0], [0.0, 1.0]]) @ a
            s = torch.tensor([[-1.0, 0.0], [0.0, 1.0]]) @ s + torch.tensor([1.0, 0.0])
        quarter = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # (x, y) -> (y, S - x)
        for _ in range(self.quarter_turns % 4):
            a = quarter @ a
            s = quarter @ s + torch.tensor([0.0, 1.0])
        return a, s


def views_for(mode: str) -> tuple[View, ...]:
    """The views of a :data:`TTA_MODES` entry, the identity first.

    Raises:
        ValueError: unknown mode.
    """
    if mode == "none":
        return (View(),)
    if mode == "flips":
        return (View(), View(0, True), View(2, False), View(2, True))
    if mode == "dihedral":
        return tuple(View(k, flip) for flip in (False, True) for k in range(4))
    raise ValueError(f"tta must be one of {TTA_MODES}, got {mode!r}")


def apply_view(images: Tensor, view: View) -> Tensor:
    """``(B, C, S, S)`` -> the view of each image, same shape."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"test-time augmentation needs square inputs, got {tuple(images.shape[-2:])}")
    if view.hflip:
        images = torch.flip(images, dims=[-1])
    return torch.rot90(images, view.quarter_turns, dims=(-2, -1))


def view_back(maps: Tensor, view: View) -> Tensor:
    """A view's ``(B, D, h, w)`` output maps moved back onto the original grid (values unchanged)."""
    maps = torch.rot90(maps, -view.quarter_turns, dims=(-2, -1))
    if view.hflip:
        maps = torch.flip(maps, dims=[-1])
    return maps


def check_grid(grid_offset: float, down_ratio: int) -> None:
    """Raise ValueError unless the output grid maps onto itself under the views (grid offset a
    multiple of ``down_ratio``: the original grid; ``model.align_grid``'s 1.5 px is not)."""
    if grid_offset % down_ratio:
        raise ValueError(f"test-time augmentation needs the original output grid (grid offset 0), got grid "
                         f"offset {grid_offset} px (model.align_grid): a flipped view's cells would not "
                         "fall on the original cells")


def _cell_grid(h: int, w: int, like: Tensor) -> Tensor:
    """``(1, 2, h, w)``: each cell's column and row."""
    ys, xs = torch.meshgrid(torch.arange(h, device=like.device, dtype=torch.float32),
                            torch.arange(w, device=like.device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys])[None]


def _linear_map(a: Tensor, values: Tensor) -> Tensor:
    """``a @ v`` for every ``(B, 2, h, w)`` vector field."""
    return torch.einsum("ij,bjhw->bihw", a.to(values), values)


def _view_parts(outputs: dict[str, Tensor], view: View, down_ratio: int, grid_offset: float
                ) -> dict[str, Tensor]:
    """One view's outputs as original-grid quantities: ``prob``, ``centre`` (input pixels), ``mean``
    (cells), ``cov`` (``(B, 3, h, w)``: xx, yy, xy in cells^2), ``ext``, ``theta``."""
    hm = outputs["hm"].float()
    b, _, h, w = hm.shape
    side = h * down_ratio
    a, s = view.matrix()
    a_inv = a.t().to(hm)
    grid = _cell_grid(h, w, hm)
    centre_view = (grid + outputs["reg"].float()) * down_ratio - grid_offset
    centre = _linear_map(a_inv, centre_view - (s.to(hm) * side)[None, :, None, None])
    wh = outputs["wh"].float()
    vectors = wh[:, :8].permute(0, 2, 3, 1).reshape(b, h, w, 4, 2)
    mean_view, cov_view = tlrb_gaussian(torch.zeros_like(vectors[..., 0, :]), vectors)
    mean = _linear_map(a_inv, mean_view.permute(0, 3, 1, 2))
    cov = a_inv @ cov_view @ a_inv.t()  # (B, h, w, 2, 2)
    cov_maps = torch.stack([cov[..., 0, 0], cov[..., 1, 1], cov[..., 0, 1]], dim=1)
    ext = wh[:, 8:10]
    if view.quarter_turns % 2:
        ext = ext.flip(1)
    parts = {"prob": torch.sigmoid(hm), "centre": centre, "mean": mean, "cov": cov_maps, "ext": ext,
             "theta": outputs["cls_theta"].float()}
    if "angle" in outputs:
        parts["angle"] = _direction_back(outputs["angle"].float(), a_inv)
    return {k: view_back(v, view) for k, v in parts.items()}


def _direction_back(direction: Tensor, a_inv: Tensor) -> Tensor:
    """A view's ``(B, 2, h, w)`` ``(cos 2 phi, sin 2 phi)`` maps in the original image's frame."""
    c, s = direction[:, 0], direction[:, 1]
    m = torch.stack([torch.stack([c, s], -1), torch.stack([s, -c], -1)], -2)  # (B, h, w, 2, 2)
    m = a_inv @ m @ a_inv.t()
    return torch.stack([m[..., 0, 0], m[..., 0, 1]], dim=1)


def merge_view_outputs(per_view: list[dict[str, Tensor]], views: tuple[View, ...], down_ratio: int,
                       grid_offset: float = 0.0) -> dict[str, Tensor]:
    """Average the outputs of the views of one batch into ordinary head outputs (module docstring).

    Args:
        per_view: one dict of logits per view (``hm (B, C, h, w)``, ``wh (B, 10, h, w)``,
            ``reg (B, 2, h, w)``, ``cls_theta (B, 1, h, w)``, optionally ``angle (B, 2, h, w)``), each
            computed on :func:`apply_view` of the same ``(B, 3, S, S)`` batch with ``S = h * down_ratio``.
        views: the views, in the same order.
        down_ratio: output stride ``d``; grid_offset: the model's grid offset ``o`` (input pixels).
    Returns:
        float32 logits of the same shapes, on the original grid.
    Raises:
        ValueError: no views, a different number of views and outputs, or a grid offset under which
            the views' cells do not coincide (any but a multiple of ``down_ratio``).
    """
    if not per_view or len(per_view) != len(views):
        raise ValueError(f"need one output per view, got {len(per_view)} outputs for {len(views)} views")
    if len(views) > 1:
        check_grid(grid_offset, down_ratio)
    parts = [_view_parts(o, v, down_ratio, grid_offset) for o, v in zip(per_view, views)]
    avg = {k: torch.stack([p[k] for p in parts]).mean(0) for k in parts[0]}
    b, _, h, w = avg["prob"].shape
    prob = avg["prob"].clamp(_PROB_EPS, 1.0 - _PROB_EPS)
    reg = (avg["centre"] + grid_offset) / down_ratio - _cell_grid(h, w, prob)
    cov = avg["cov"].permute(0, 2, 3, 1)
    cov_matrix = torch.stack([torch.stack([cov[..., 0], cov[..., 2]], -1),
                              torch.stack([cov[..., 2], cov[..., 1]], -1)], -2)
    rectangle = covariance_rectangle(cov_matrix)  # (B, h, w, 4, 2)
    rectangle = rectangle + avg["mean"].permute(0, 2, 3, 1)[..., None, :] / 2
    vectors = rectangle.reshape(b, h, w, 8).permute(0, 3, 1, 2)
    merged = {
        "hm": torch.log(prob) - torch.log1p(-prob),
        "wh": torch.cat([vectors, avg["ext"]], dim=1),
        "reg": reg,
        "cls_theta": avg["theta"],
    }
    if "angle" in avg:
        merged["angle"] = avg["angle"]
    return merged
