"""Perfect-network checks of the target encoding: the logits a perfect network would produce
(:func:`ideal_outputs`), the polygon -> targets -> logits -> decoded polygon round trip
(:func:`roundtrip_polygons`), and the angular band in which a box is decoded as "horizontal"
(:func:`horizontal_band_halfwidth`). The tests and ``bbavectors.benchmarks.targets`` measure the
encoding with them (docs/targets.md)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from DOTA_devkit import geometry as np_geo

from .config import DOWN_RATIO, TargetConfig
from .decode import decode_topk
from .geometry import poly_to_obb
from .losses import angle_targets
from .targets import encode_targets

__all__ = ["ideal_outputs", "horizontal_band_halfwidth", "roundtrip_polygons"]

FloatArray = NDArray[np.float64]


def ideal_outputs(targets: dict[str, Tensor], logit_clamp: float = 20.0, angle: bool = False
                  ) -> dict[str, Tensor]:
    """The head logits a perfect network would produce for these targets (round-trip checks).

    ``hm`` = logit of the target heatmap clipped to ``+-logit_clamp`` (its only 3x3 maxima with a
    non-negligible score are the positive centres: each Gaussian strictly decreases away from its
    centre and overlaps take the max); ``wh``, ``reg`` written at the centres of valid slots
    (zero elsewhere); ``cls_theta`` = ``+-logit_clamp`` from the target. Two objects sharing a
    centre cell share one prediction (the later slot wins). With ``angle``, also the angle head's
    map: each target's long side as ``(cos 2 phi, sin 2 phi)`` (:func:`bbavectors.losses.angle_targets`).

    Args:
        targets: the dict of :func:`bbavectors.targets.encode_targets`.
    Returns:
        ``{"hm": (B, C, h, w), "wh": (B, 10, h, w), "reg": (B, 2, h, w), "cls_theta": (B, 1, h, w)}``
        and, with ``angle``, ``"angle": (B, 2, h, w)``.
    """
    hm = targets["hm"]
    b, _, h, w = hm.shape
    mask = targets["mask"]
    img = torch.arange(b, device=hm.device)[:, None].expand_as(mask)[mask]
    pix = targets["ind"][mask]

    def at_centres(values: Tensor, fill: float) -> Tensor:
        out = values.new_full((b, h * w, values.shape[-1]), fill)
        out[img, pix] = values[mask]
        return out.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()

    theta = torch.where(targets["cls_theta"] > 0.5, logit_clamp, -logit_clamp)
    outputs = {
        "hm": torch.logit(hm).clamp(-logit_clamp, logit_clamp),
        "wh": at_centres(targets["wh"], 0.0),
        "reg": at_centres(targets["reg"], 0.0),
        "cls_theta": at_centres(theta, -logit_clamp),
    }
    if angle:
        outputs["angle"] = at_centres(angle_targets(targets["wh"], mask)[0], 0.0)
    return outputs



def horizontal_band_halfwidth(threshold: float, aspect: float) -> float:
    """Largest tilt (degrees) from axis alignment at which a box stays "horizontal".

    ``horizontal_iou = 1 / (1 + (k + 1/k) sin(2a) / 2)`` for aspect ``k = w / h`` (expand
    ``(w c + h s)(w s + h c) = w h + (w^2 + h^2) s c``), so the band is
    ``a <= asin(2 (1/threshold - 1) / (k + 1/k)) / 2``.
    """
    if not 0 < threshold <= 1 or aspect < 1:
        raise ValueError(f"need 0 < threshold <= 1 and aspect >= 1, got {threshold}, {aspect}")
    x = 2 * (1 / threshold - 1) / (aspect + 1 / aspect)
    return math.degrees(math.asin(min(1.0, x)) / 2)


def roundtrip_polygons(
    polygons: FloatArray,
    cfg: TargetConfig,
    cls_theta_thresh: float = 0.5,
    down_ratio: int = DOWN_RATIO,
    spacing: float = 12.0,
    per_image: int = 256,
    seed: int = 0,
    edit_targets: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    retries: int = 2,
    grid_offset: float = 0.0,
    angle: bool = False,
) -> tuple[FloatArray, FloatArray]:
    """Encode -> ideal logits (:func:`ideal_outputs`) -> :func:`decode_topk`.

    Polygons are laid out ``per_image`` to a canvas on a grid (``spacing`` px apart, each centre
    at a random sub-cell offset), so every object has its own centre cell; boxes may overlap
    (one class: overlapping Gaussians take the max). Each detection is given to the object whose
    encoded centre is nearest to the mean of its 4 corners (the centre, for any decoding of the
    form ``tl = c + t + l``), within half a cell. An object can still lose its cell to a
    neighbour when its minimum-area rectangle flips between two equally small ones under
    translation (its centre moves); objects without a detection are laid out again, alone,
    up to ``retries`` times.

    Args:
        polygons: ``(N, 8)``; objects must be encodable under ``cfg`` (short side >= min_size).
        edit_targets: optional change applied to the targets before the ideal logits (used by the
            tests to break the encoding on purpose).
        grid_offset: the grid offset given to the encoder and the decoder (``model.grid_offset``).
        angle: decode with a perfect angle head too (``model.angle_head``).
    Returns:
        ``(decoded, encoded)``: ``(N, 8)`` each, in the input polygons' coordinates: the decoded
        polygons (NaN rows for objects that got no detection) and the rectangles that were
        encoded (the minimum-area rectangle of each placed polygon; for a quadrilateral with two
        equally small rectangles, which one wins can depend on the translation, so compare with
        these rather than with a rectangle fitted elsewhere).
    Raises:
        ValueError: an object was ignored or dropped by the encoder.
    """
    polys = np.asarray(polygons, dtype=np.float64).reshape(-1, 8)
    if spacing < 2 * down_ratio:
        raise ValueError(f"spacing {spacing} < {2 * down_ratio}: two centres could share a cell")
    rng = np.random.default_rng(seed)
    out = np.full_like(polys, np.nan)
    encoded = np.zeros_like(polys)
    centres = np_geo.poly_to_obb(polys)[:, :2]
    for start in range(0, len(polys), per_image):
        chunk = polys[start:start + per_image]
        n = len(chunk)
        cols = math.ceil(math.sqrt(n))
        rel = chunk.reshape(n, 4, 2) - centres[start:start + n, None, :]
        margin = math.ceil(float(np.abs(rel).max())) + 2 * down_ratio
        slot = np.arange(n)
        grid = np.stack([slot % cols, slot // cols], axis=1) * spacing
        where = margin + grid + rng.uniform(0, down_ratio, (n, 2))
        side = math.ceil((2 * margin + cols * spacing) / 32) * 32
        placed = (rel + where[:, None, :]).reshape(n, 8)
        zeros = torch.zeros(n, dtype=torch.long)
        targets = encode_targets(
            [torch.from_numpy(placed)], [zeros], [zeros], 1, (side, side), cfg, down_ratio, grid_offset
        )
        if int(targets["mask"].sum()) != n:
            raise ValueError(
                f"roundtrip_polygons: {n - int(targets['mask'].sum())} of {n} objects were not encodable "
                f"(ignored {targets['num_ignored'].tolist()}, dropped {targets['num_dropped'].tolist()})"
            )
        map_w = targets["hm"].shape[-1]
        ind = targets["ind"][0, :n]
        true_centre = ((torch.stack([ind % map_w, ind // map_w], dim=1) + targets["reg"][0, :n]) * down_ratio
                       - grid_offset)
        if edit_targets is not None:
            targets = edit_targets(targets)
        decoded, scores, _ = decode_topk(ideal_outputs(targets, angle=angle), n + 8, cls_theta_thresh,
                                         down_ratio, grid_offset=grid_offset)
        found = decoded[0][scores[0] > 0.5].double()
        dist = torch.cdist(found.view(-1, 4, 2).mean(1), true_centre.double())
        best_dist, owner = dist.min(dim=1) if len(found) else (dist.new_zeros(0), dist.new_zeros(0).long())
        ok = best_dist < down_ratio / 2
        rows = np.full((n, 8), np.nan)
        rows[owner[ok].numpy()] = found[ok].numpy()
        shift = (centres[start:start + n] - where)[:, None, :]
        out[start:start + n] = (rows.reshape(n, 4, 2) + shift).reshape(n, 8)
        rect = np_geo.obb_to_poly(poly_to_obb(torch.from_numpy(placed)).numpy())
        encoded[start:start + n] = (rect.reshape(n, 4, 2) + shift).reshape(n, 8)
    lost = np.isnan(out).any(axis=1)
    if lost.any() and retries > 0:
        again = roundtrip_polygons(
            polys[lost], cfg, cls_theta_thresh, down_ratio, spacing, per_image, seed + 1, edit_targets,
            retries - 1, grid_offset, angle,
        )
        out[lost], encoded[lost] = again
    return out, encoded
