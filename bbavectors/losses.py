r"""BBAVectors training loss, computed from the heads' **logits** (never from sigmoid outputs).

``total = hm_weight * L_hm + wh_weight * L_wh + reg_weight * L_reg + cls_theta_weight * L_cls_theta
+ probiou_weight * L_probiou``

* ``L_hm``: CenterNet's penalty-reduced focal loss. With ``p = sigmoid(x)``, ``y`` the target heatmap::

      pos (y == 1):  -(1 - p)^alpha * log(p)
      neg (y <  1):  -(1 - y)^beta * p^alpha * log(1 - p)

  written with ``logsigmoid`` (``log p = logsigmoid(x)``, ``log(1 - p) = logsigmoid(-x)``,
  ``p^alpha = exp(alpha * logsigmoid(x))``), so that it stays finite, with finite gradients, for
  any finite logit: the original took ``log`` of unclamped sigmoid outputs and went NaN as soon as a
  sigmoid saturated to exactly 0 or 1 in float32 (docs/design.md "Known flaws" item 1). Pixels
  under ``hm_ignore`` count neither way. Sum over the batch divided by the number of positive
  peaks outside ignore regions, clamped to >= 1 (an image without objects gives its negatives' sum).
* ``L_wh`` / ``L_reg``: smooth L1 (``smooth_l1_beta``, default 1 as the original; 0 is plain L1,
  CenterNet's) between the predictions gathered at the object centres ``ind`` and the targets,
  over valid slots (``mask``): sum over objects and channels / (number of objects * channels), the
  number clamped to >= 1, so a batch without objects gives exactly 0 (no 0/0). The targets are in
  output cells: with beta 1 an error under one cell (every ``reg`` error, most of a small ship's
  vector errors) sits in the quadratic zone, whose gradient shrinks with the error; below beta the
  gradient stays 1.
  With ``cyclic_vectors``, the first 8 ``wh`` channels (``t, r, b, l``) are compared with the 4 cyclic
  relabelings of the target (``r, b, l, t``, ...: the same four corners, so the same box after
  decoding) and the smallest loss counts, per object. The labelling rule must jump somewhere (a
  quarter turn maps a rectangle onto itself with its vectors relabelled); it jumps at axis
  alignment, so near-horizontal thin boxes get targets that flip between two labelings under
  label noise, and a network trained on both predicts their average (a diamond). The minimum
  accepts either.
* ``L_cls_theta``: binary cross-entropy with logits at the centres, mean over valid slots (same
  normalisation).
* ``L_probiou`` (weight ``probiou_weight``, 0 = the original's loss): the Hellinger distance
  (``1 - ProbIoU``, :mod:`bbavectors.probiou`) between the box decoded from the predicted
  ``reg`` and ``t, r, b, l`` vectors and the target box, mean over valid slots. Scale-free (the
  smooth L1 is in output cells, so a small object's loose box costs it little) and blind to the
  vectors' labelling. Always computed and logged: it also measures how tight the boxes are.
* ``regress_radius = r > 0``: the ``wh``, ``reg``, ``cls_theta`` and ``probiou`` terms also read the
  cells up to ``r`` cells from each centre cell (in the map, not under ``hm_ignore``, not another
  object's peak), each weighted by the heatmap target there (the centre cell weighs 1) and the sums
  divided by the sum of the weights. Such a cell learns the same box: the same vectors (they are
  measured from the exact centre) and the offset ``reg - (dx, dy)``, which may leave ``[0, 1)``
  (``reg`` has no activation). Why: the decoder reads the box at the heatmap's peak, and the peak of
  a wide Gaussian often lands one cell off the centre cell, where the original never trained a box.
  With ``neighbour_weight = "uniform"`` every usable neighbour weighs 1: a small object's peak is a
  single cell (radius 0), so the heatmap weight is 0 around it, yet its decoded peak lands off the
  centre cell as often. With ``neighbour_weight = "aligned"`` each usable cell of the square weighs
  its task alignment (below) divided by the best of the object's cells (TOOD weights its box loss so):
  the box is learnt most where the peak is, least where neither score nor box fits; the weights
  are detached and the sums still divided by the sum of the weights.
* ``hm_quality``: the positive term of ``L_hm`` becomes a quality focal loss (GFL's QFL) whose
  target at each object's centre cell is ``q = 1 - d``, ``d`` the (detached) Hellinger distance of
  the box predicted there::

      pos:  -|q - p|^alpha * (q * log(p) + (1 - q) * log(1 - p))

  equal to the term above at ``q = 1``, smallest at ``p = q``. The peak's height, which is the
  detection's score, then estimates how well its box fits, so that AP ranks tight boxes first; the
  original trains every peak to 1 whatever its box.

* ``peak_assign = "aligned"`` (needs ``regress_radius >= 1``): each object's positive (the heatmap
  cell trained to 1, whose box the decoder reads) is no longer its centre cell but the cell of its
  regression square with the best alignment ``a = p * (1 - d)^6`` (TOOD's task-aligned metric with
  its exponents 1 and 6: ``p`` the sigmoid score there in the object's class, ``d`` the Hellinger
  distance of the box predicted there; both detached). The centre cell, when not chosen, becomes
  neutral (target 0.99: its negative weight ``(1 - y)^beta`` is ~0), the rest of the Gaussian stays.
  Why: a wide peak often lands one cell off the centre (measured: 58 % of the peaks on SSDD), where
  the box is a neighbour's; this trains the peak onto the cell whose box fits best instead.
  With ``peak_topk = k > 1`` the next ``k - 1`` usable cells by alignment are positives too, each
  trained by the quality focal loss (as ``hm_quality``) towards its alignment over the object's best
  (``q = a / a_best``: 1 at the peak), as YOLOv8 and TOOD train several cells per object with soft
  targets; ``L_hm`` is still divided by the number of objects (the best cells), so more positives do
  not dilute the negatives. Why: a small ship's peak is one cell whose neighbours are full
  negatives, so a cell that predicts the ship as well as the peak is still pushed to 0.

* ``L_angle`` (only when the outputs hold an ``angle`` map, ``model.angle_head``; weight
  ``angle_weight``): plain L1 between the ``(cos 2 phi, sin 2 phi)`` predicted at the regression
  slots and the long axis of the target box (:func:`bbavectors.probiou.covariance_direction` of
  the target vectors' Gaussian, so no labelling enters), same weights and normalisation as
  ``L_wh``; slots whose target is a square (no long axis) weigh 0. Its error is an angle, the same
  for a 10 px ship as for a 100 px one, where a vector's error in cells is a small ship's angle
  error times its (short) length. Logged as 0 without the head. With ``angle_probiou`` the
  ``probiou`` term compares the box as the decoder builds it with the head (the rectangle along its
  direction, :func:`bbavectors.probiou.direction_covariance`) instead of the vectors' parallelogram.

Everything is computed in float32 whatever the autocast dtype of the outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LossConfig
from .probiou import covariance_direction, direction_covariance, hellinger_distance, tlrb_gaussian

__all__ = [
    "BBAVLoss",
    "focal_loss_with_logits",
    "gather_at_centres",
    "masked_smooth_l1",
    "cyclic_vector_smooth_l1",
    "masked_bce",
    "masked_probiou_distance",
    "angle_targets",
    "probiou_distances",
    "slot_mean",
    "centre_quality_map",
    "neighbour_slots",
    "aligned_peak_targets",
    "aligned_slot_weights",
    "soft_peak_targets",
    "object_classes",
    "slot_alignment",
]


def focal_loss_with_logits(
    logits: Tensor, target: Tensor, ignore: Tensor | None = None, alpha: float = 2.0, beta: float = 4.0,
    quality: Tensor | None = None, counted: Tensor | None = None,
) -> Tensor:
    """CenterNet focal loss from logits (module docstring).

    Args:
        logits: ``(B, C, h, w)`` heatmap logits.
        target: ``(B, C, h, w)`` in ``[0, 1]``, exactly 1 at object centres.
        ignore: ``(B, 1, h, w)`` or ``(B, C, h, w)`` bool; True pixels add nothing (None: no ignore).
        alpha, beta: focusing exponents.
        quality: ``(B, 1, h, w)`` or ``(B, C, h, w)`` in ``[0, 1]``, read at the positives only: the
            quality focal loss with that target there (module docstring, ``hm_quality``); None: 1.
        counted: ``(B, C, h, w)`` bool, the positives that the sum is divided by (``peak_topk``: one
            per object); None: every positive.
    Returns:
        Scalar: summed loss / max(1, number of counted positives outside ignore).
    """
    x = logits.float()
    y = target.float()
    log_p = F.logsigmoid(x)
    log_not_p = F.logsigmoid(-x)
    pos = y.eq(1.0)
    if quality is None:
        pos_loss = -torch.exp(alpha * log_not_p) * log_p
    else:
        q = quality.float().clamp(0.0, 1.0)
        pos_loss = -(q - torch.sigmoid(x)).abs().pow(alpha) * (q * log_p + (1.0 - q) * log_not_p)
    neg_loss = -torch.pow(1.0 - y, beta) * torch.exp(alpha * log_p) * log_not_p
    per_pixel = torch.where(pos, pos_loss, neg_loss)
    if counted is not None:
        pos = counted.bool() & pos
    if ignore is not None:
        keep = ~ignore.expand_as(per_pixel)
        per_pixel = per_pixel * keep
        pos = pos & keep
    num_pos = pos.sum().clamp_min(1).float()
    return per_pixel.sum() / num_pos


def gather_at_centres(feature: Tensor, ind: Tensor) -> Tensor:
    """Values of a head at object centres.

    Args:
        feature: ``(B, C, h, w)`` (any memory format; the map is never copied).
        ind: ``(B, K)`` long, ``y * w + x``.
    Returns:
        ``(B, K, C)``.
    """
    b, _, _, w = feature.shape
    ys = torch.div(ind, w, rounding_mode="floor")
    xs = ind - ys * w
    batch_idx = torch.arange(b, device=feature.device)[:, None]
    # Advanced indices around a slice put the indexed dims first: (B, K, C).
    return feature[batch_idx, :, ys, xs]


def neighbour_slots(targets: dict[str, Tensor], radius: int, hw: tuple[int, int], uniform: bool = False
                    ) -> dict[str, Tensor]:
    """The regression slots of ``targets`` extended to the cells around each centre (module docstring).

    Args:
        targets: :func:`bbavectors.targets.encode_targets` output (``ind, mask, reg, wh, cls_theta``
            with ``K`` slots, ``hm``, optional ``hm_ignore``).
        radius: ``r``; hw: the output map ``(h, w)``.
        uniform: usable neighbours weigh 1 (``loss.neighbour_weight: uniform``), not the heatmap target.
    Returns:
        ``ind`` ``(B, K * (2r+1)^2)`` long, ``weight`` ``(B, K * (2r+1)^2)`` float32 (1 at valid centres,
        the heatmap target (or 1) at usable neighbours, else 0), ``reg`` ``(B, K * (2r+1)^2, 2)``, ``wh``,
        ``cls_theta`` (repeated); the centre slots first, in order.
    """
    h, w = hw
    ind, mask = targets["ind"], targets["mask"]
    ys = torch.div(ind, w, rounding_mode="floor")
    xs = ind - ys * w
    heat = targets["hm"].amax(dim=1).flatten(1)  # (B, h * w)
    # Another object's peak (target 1) keeps its own box; an ignored cell learns nothing.
    blocked = heat >= 1.0
    if targets.get("hm_ignore") is not None:
        blocked = blocked | targets["hm_ignore"].flatten(1)
    value = torch.ones_like(heat) if uniform else heat
    offsets = [(0, 0)] + [(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
                          if (dx, dy) != (0, 0)]
    inds, weights, regs = [], [], []
    for dx, dy in offsets:
        nx, ny = xs + dx, ys + dy
        inside = mask & (nx >= 0) & (nx < w) & (ny >= 0) & (ny < h)
        n_ind = torch.where(inside, ny * w + nx, ind)
        if (dx, dy) == (0, 0):
            weight = mask.float()
        else:
            usable = inside & ~blocked.gather(1, n_ind)
            weight = torch.where(usable, value.gather(1, n_ind), torch.zeros_like(value[:, :1]))
        inds.append(n_ind)
        weights.append(weight)
        regs.append(targets["reg"] - targets["reg"].new_tensor([dx, dy]))
    n = len(offsets)
    return {"ind": torch.cat(inds, 1), "weight": torch.cat(weights, 1), "reg": torch.cat(regs, 1),
            "wh": targets["wh"].repeat(1, n, 1), "cls_theta": targets["cls_theta"].repeat(1, n, 1)}


def object_classes(targets: dict[str, Tensor]) -> Tensor:
    """``(B, K)`` long: each slot's class, the channel where its centre cell is a heatmap peak."""
    return gather_at_centres(targets["hm"].float(), targets["ind"]).argmax(dim=-1)


def slot_alignment(hm_logits: Tensor, targets: dict[str, Tensor], slots: dict[str, Tensor],
                   distances: Tensor, alpha: float = 1.0, beta: float = 6.0) -> Tensor:
    """TOOD's task alignment ``p^alpha * (1 - d)^beta`` of every regression slot (module docstring).

    Args:
        hm_logits: ``(B, C, h, w)`` predicted heatmap logits.
        targets: :func:`bbavectors.targets.encode_targets` output with ``K`` slots (``hm``, ``ind``,
            ``mask``).
        slots: :func:`neighbour_slots` of ``targets``: ``n = (2r+1)^2`` groups of ``K`` slots, the
            centre group first; ``weight`` 0 marks cells that may not take the peak.
        distances: ``(B, n * K)`` Hellinger distances of the boxes predicted at the slots.
        alpha, beta: exponents of the score and of ``1 - distance``.
    Returns:
        ``(B, n * K)`` float32, detached: the alignment in ``[0, 1]`` at usable slots (an object's
        centre slot is always usable), -1 at the others.
    """
    k = targets["ind"].shape[1]
    n = slots["ind"].shape[1] // k
    with torch.no_grad():
        cls = object_classes(targets)
        logits = gather_at_centres(hm_logits.float(), slots["ind"])  # (B, n * K, C)
        score = torch.sigmoid(logits.gather(2, cls.repeat(1, n)[..., None])[..., 0])
        align = score.pow(alpha) * (1.0 - distances.float()).clamp_min(0.0).pow(beta)
        usable = slots["weight"] > 0
        usable[:, :k] = targets["mask"]
        return torch.where(usable, align, torch.full_like(align, -1.0))


def aligned_slot_weights(alignment: Tensor, k: int) -> Tensor:
    """Regression weights of the slots from their alignment (``neighbour_weight: aligned``).

    Args:
        alignment: ``(B, n * K)`` from :func:`slot_alignment`; k: ``K``, the slots per group.
    Returns:
        ``(B, n * K)`` float32 in ``[0, 1]``: each slot's alignment divided by the best of its object's
        slots (1 at the best-aligned cell, the peak that ``peak_assign: aligned`` trains), 0 at
        unusable slots; 1 at every usable slot of an object whose alignments all underflow to 0.
    """
    b = alignment.shape[0]
    a = alignment.view(b, -1, k)
    usable = a >= 0
    a = a.clamp_min(0.0)
    best = a.amax(dim=1, keepdim=True)
    weight = torch.where(best > 0, a / best.clamp_min(torch.finfo(a.dtype).tiny), usable.float())
    return (weight * usable.float()).view(b, -1)


def aligned_peak_targets(targets: dict[str, Tensor], slots: dict[str, Tensor], alignment: Tensor) -> Tensor:
    """The heatmap target with each object's peak moved to its best-aligned slot (``peak_assign``).

    Args:
        targets: :func:`bbavectors.targets.encode_targets` output with ``K`` slots (``hm``, ``ind``,
            ``mask``).
        slots: :func:`neighbour_slots` of ``targets``: ``n = (2r+1)^2`` groups of ``K`` slots, the
            centre group first.
        alignment: ``(B, n * K)`` :func:`slot_alignment` of the slots (-1 where a cell may not take
            the peak).
    Returns:
        ``(B, C, h, w)`` float32: ``targets["hm"]`` with 1 at each valid object's chosen cell (in its
        class) and 0.99 at its centre cell when another cell was chosen; equal to ``targets["hm"]``
        where every object's centre aligns best.
    """
    hm = targets["hm"].float()
    b, c, h, w = hm.shape
    ind, mask = targets["ind"], targets["mask"]
    k = ind.shape[1]
    n = slots["ind"].shape[1] // k
    cls = object_classes(targets)
    with torch.no_grad():
        best = alignment.view(b, n, k).argmax(dim=1)  # (B, K); ties keep the centre (the first group)
        chosen = slots["ind"].view(b, n, k).gather(1, best[:, None])[:, 0]
        moved = mask & (chosen != ind)
        spare = h * w  # writes of slots that change nothing go to an extra cell, cut off below
        flat = torch.cat([hm.flatten(2), hm.new_zeros(b, c, 1)], dim=2)
        batch_idx = torch.arange(b, device=hm.device)[:, None]
        flat[batch_idx, cls, torch.where(moved, ind, torch.full_like(ind, spare))] = 0.99
        # Written second, so that a peak shared with an unmoved object (two centres in one cell)
        # stays a peak.
        peak = torch.where(moved, chosen, torch.where(mask, ind, torch.full_like(ind, spare)))
        flat[batch_idx, cls, peak] = 1.0
        return flat[..., :spare].reshape(b, c, h, w)


def soft_peak_targets(targets: dict[str, Tensor], slots: dict[str, Tensor], alignment: Tensor, topk: int
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Each object's ``topk`` best-aligned slots as heatmap positives with soft targets (``peak_topk``).

    Args:
        targets, slots, alignment: as :func:`aligned_peak_targets`; topk: positives per object (1: the
            best cell alone, :func:`aligned_peak_targets`).
    Returns:
        ``hm (B, C, h, w)`` float32: :func:`aligned_peak_targets` with 1 also at each valid object's
        next ``topk - 1`` usable slots by alignment (in its class); ``quality (B, 1, h, w)`` float32:
        at those cells their :func:`aligned_slot_weights` (alignment over the object's best), 1 at the
        best cells and everywhere else (one channel: a cell that is a positive in two classes reads
        one quality for both); ``counted (B, C, h, w)`` bool: the best cells, one per object (the
        positives of :func:`aligned_peak_targets`), which normalise the loss.
    """
    best_only = aligned_peak_targets(targets, slots, alignment)
    b, c, h, w = best_only.shape
    k = targets["ind"].shape[1]
    n = slots["ind"].shape[1] // k
    with torch.no_grad():
        counted = best_only.eq(1.0)
        grouped = alignment.view(b, n, k)
        rank = grouped.argsort(dim=1, descending=True, stable=True)[:, 1:topk]  # (B, topk - 1, K)
        runner_ind = slots["ind"].view(b, n, k).gather(1, rank).flatten(1)
        usable = ((grouped.gather(1, rank) >= 0) & targets["mask"][:, None, :]).flatten(1)
        relative = aligned_slot_weights(alignment, k).view(b, n, k).gather(1, rank).flatten(1)
        spare = h * w  # unusable slots write to an extra cell, cut off below
        cls = object_classes(targets)[:, None, :].expand(b, rank.shape[1], k).flatten(1)
        batch_idx = torch.arange(b, device=best_only.device)[:, None]
        hm = torch.cat([best_only.flatten(2), best_only.new_zeros(b, c, 1)], dim=2)
        hm[batch_idx, cls, torch.where(usable, runner_ind, torch.full_like(runner_ind, spare))] = 1.0
        quality = centre_quality_map(relative, runner_ind, usable, (h, w))
        # Then 1 at the best cells: a cell that is one object's best keeps target 1 whatever another
        # ranks it.
        quality = torch.where(counted.any(dim=1, keepdim=True), 1.0, quality)
        return hm[..., :spare].reshape(b, c, h, w), quality, counted


def masked_smooth_l1(pred: Tensor, target: Tensor, mask: Tensor, beta: float = 1.0) -> Tensor:
    """Smooth L1 summed over valid slots and channels / (valid slots * channels).

    Args:
        pred, target: ``(B, K, D)``; mask: ``(B, K)`` bool, or float weights (the sums are weighted
            and divided by the sum of the weights); beta: the quadratic zone's half width (0: L1).
    Returns:
        Scalar; exactly 0 when no slot is valid.
    """
    m = mask[..., None].float()
    loss = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=beta) * m
    count = (m.sum() * pred.shape[-1]).clamp_min(1.0)
    return loss.sum() / count


def cyclic_vector_smooth_l1(pred: Tensor, target: Tensor, mask: Tensor, beta: float = 1.0) -> Tensor:
    """:func:`masked_smooth_l1` of ``wh`` with the vectors scored against their best cyclic relabeling.

    Args:
        pred, target: ``(B, K, 10)``: ``t, r, b, l`` as ``(x, y)`` pairs, then the external ``w, h``;
            mask: ``(B, K)`` bool or float weights; beta: as :func:`masked_smooth_l1`.
    Returns:
        Scalar, normalised as :func:`masked_smooth_l1` (equal to it when the labeling already fits
        best); exactly 0 when no slot is valid.
    """
    b, k, d = pred.shape
    p, t = pred.float(), target.float()
    vectors = t[..., :8].reshape(b, k, 4, 2)
    # relabelings[..., s, :] = the target vectors shifted by s places: (B, K, 4, 8)
    relabelings = torch.stack([vectors.roll(s, dims=2).reshape(b, k, 8) for s in range(4)], dim=2)
    vec = F.smooth_l1_loss(p[..., None, :8].expand_as(relabelings), relabelings, reduction="none", beta=beta)
    ext = F.smooth_l1_loss(p[..., 8:], t[..., 8:], reduction="none", beta=beta)
    per_slot = vec.sum(-1).min(dim=-1).values + ext.sum(-1)
    m = mask.float()
    return (per_slot * m).sum() / (m.sum() * d).clamp_min(1.0)


def masked_bce(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Binary cross-entropy with logits, mean over valid slots.

    Args:
        logits, target: ``(B, K, 1)``; mask: ``(B, K)`` bool or float weights.
    Returns:
        Scalar; exactly 0 when no slot is valid.
    """
    m = mask[..., None].float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none") * m
    return loss.sum() / (m.sum() * logits.shape[-1]).clamp_min(1.0)


def probiou_distances(
    pred_reg: Tensor, pred_wh: Tensor, target_reg: Tensor, target_wh: Tensor, mask: Tensor,
    pred_angle: Tensor | None = None,
) -> Tensor:
    """Hellinger distance between the predicted and the target decoded box of every slot.

    The centre cell is common to both boxes, so centres are the ``reg`` offsets alone.

    Args:
        pred_reg, target_reg: ``(B, K, 2)``; pred_wh, target_wh: ``(B, K, 10)`` (only the ``t, r, b, l``
            vectors, channels 0-7, are used); mask: ``(B, K)`` bool or float weights.
        pred_angle: ``(B, K, 2)`` the angle head's directions (``loss.angle_probiou``): the predicted
            box is then the rectangle the decoder builds along them; None: the vectors' parallelogram.
    Returns:
        ``(B, K)`` in ``[0, 1]``, exactly 0 at invalid slots (mask 0).
    """
    b, k, _ = pred_wh.shape
    mean_p, cov_p = tlrb_gaussian(pred_reg.float(), pred_wh[..., :8].float().reshape(b, k, 4, 2))
    if pred_angle is not None:
        cov_p = direction_covariance(cov_p, pred_angle.float())
    mean_t, cov_t = tlrb_gaussian(target_reg.float(), target_wh[..., :8].float().reshape(b, k, 4, 2))
    # Only valid slots enter the formula (unused slots hold zeros: a degenerate box).
    distance = hellinger_distance(mean_p, cov_p, mean_t, cov_t)
    return torch.where(mask > 0, distance, torch.zeros_like(distance))


def masked_probiou_distance(
    pred_reg: Tensor, pred_wh: Tensor, target_reg: Tensor, target_wh: Tensor, mask: Tensor
) -> Tensor:
    """Mean of :func:`probiou_distances` over valid slots (weighted by ``mask`` when it is float).

    Returns:
        Scalar in ``[0, 1]``; exactly 0 when no slot is valid.
    """
    return slot_mean(probiou_distances(pred_reg, pred_wh, target_reg, target_wh, mask), mask)


def angle_targets(target_wh: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The angle head's targets and weights from the target vectors (module docstring, ``L_angle``).

    Args:
        target_wh: ``(B, K, 10)`` (channels 0-7, the ``t, r, b, l`` vectors, are used); mask:
            ``(B, K)`` bool or float weights.
    Returns:
        ``direction (B, K, 2)`` ``(cos 2 phi, sin 2 phi)`` of each target's long side and ``weight
        (B, K)`` float32: ``mask``, 0 where the target is a square.
    """
    b, k, _ = target_wh.shape
    vectors = target_wh[..., :8].float().reshape(b, k, 4, 2)
    _, cov = tlrb_gaussian(vectors.new_zeros(b, k, 2), vectors)
    direction, defined = covariance_direction(cov)
    return direction, mask.float() * defined.float()


def slot_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of per-slot values over valid slots.

    Args:
        values: ``(B, K)``; mask: ``(B, K)`` bool, or float weights (a weighted mean).
    Returns:
        Scalar; exactly 0 when no slot is valid.
    """
    m = mask.float()
    return (values * m).sum() / m.sum().clamp_min(1.0)


def centre_quality_map(quality: Tensor, ind: Tensor, mask: Tensor, hw: tuple[int, int]) -> Tensor:
    """Per-object qualities written at their centre cells (or any cells), for :func:`focal_loss_with_logits`.

    Args:
        quality: ``(B, K)`` values; ind: ``(B, K)`` long centre cells ``y * w + x``; mask: ``(B, K)``
            bool (invalid slots are not written); hw: the map's ``(h, w)``.
    Returns:
        ``(B, 1, h, w)`` float32: the quality at each valid centre, 1 elsewhere (only the positives
        are read, whatever their class).
    """
    b, _ = ind.shape
    h, w = hw
    out = quality.new_ones(b, h * w + 1, dtype=torch.float32)
    # Invalid slots write to a spare last cell that is dropped.
    out.scatter_(1, torch.where(mask.bool(), ind, torch.full_like(ind, h * w)), quality.float())
    return out[:, : h * w].reshape(b, 1, h, w)


class BBAVLoss(nn.Module):
    """The four BBAVectors losses and their weighted sum.

    ``forward(outputs, targets)``: ``outputs`` are the model's logits
    (``hm (B, C, h, w)``, ``wh (B, 10, h, w)``, ``reg (B, 2, h, w)``, ``cls_theta (B, 1, h, w)``,
    optionally ``angle (B, 2, h, w)``), ``targets`` the dict of
    :func:`bbavectors.targets.encode_targets` (``hm_ignore`` optional).
    Returns ``(total, parts)``: the weighted scalar and the **unweighted** parts
    ``{"hm", "wh", "reg", "cls_theta", "probiou", "angle"}`` (scalars, still attached to the graph;
    ``angle`` is 0 without an angle map).
    """

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(
        self, outputs: dict[str, Tensor], targets: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        if cfg.regress_radius > 0:
            map_hw = (outputs["wh"].shape[-2], outputs["wh"].shape[-1])
            slots = neighbour_slots(targets, cfg.regress_radius, map_hw, cfg.neighbour_weight != "heatmap")
            ind, mask = slots["ind"], slots["weight"]
        else:
            slots, ind, mask = targets, targets["ind"], targets["mask"]
        pred_wh = gather_at_centres(outputs["wh"], ind)
        pred_reg = gather_at_centres(outputs["reg"], ind)
        pred_angle = (gather_at_centres(outputs["angle"], ind) if cfg.angle_probiou and "angle" in outputs
                      else None)
        distances = probiou_distances(pred_reg, pred_wh, slots["reg"], slots["wh"], mask, pred_angle)
        hm_target = targets["hm"]
        quality = counted = None
        if cfg.peak_assign == "aligned":  # the config check: regress_radius >= 1
            alignment = slot_alignment(outputs["hm"], targets, slots, distances.detach())
            if cfg.peak_topk > 1:
                hm_target, quality, counted = soft_peak_targets(targets, slots, alignment, cfg.peak_topk)
            else:
                hm_target = aligned_peak_targets(targets, slots, alignment)
            if cfg.neighbour_weight == "aligned":
                mask = aligned_slot_weights(alignment, targets["ind"].shape[1])
        if cfg.hm_quality:
            # The centre slots come first (neighbour_slots keeps their order).
            k = targets["ind"].shape[1]
            quality = centre_quality_map((1.0 - distances[:, :k]).detach(), targets["ind"], targets["mask"],
                                         (outputs["hm"].shape[-2], outputs["hm"].shape[-1]))
        parts = {
            "hm": focal_loss_with_logits(
                outputs["hm"], hm_target, targets.get("hm_ignore"), cfg.focal_alpha, cfg.focal_beta,
                quality, counted,
            ),
            "wh": (cyclic_vector_smooth_l1 if cfg.cyclic_vectors else masked_smooth_l1)(
                pred_wh, slots["wh"], mask, cfg.smooth_l1_beta),
            "reg": masked_smooth_l1(pred_reg, slots["reg"], mask, cfg.smooth_l1_beta),
            "cls_theta": masked_bce(gather_at_centres(outputs["cls_theta"], ind), slots["cls_theta"], mask),
            "probiou": slot_mean(distances, mask),
            "angle": self._angle_loss(outputs, ind, slots["wh"], mask),
        }
        total = (
            cfg.hm_weight * parts["hm"]
            + cfg.wh_weight * parts["wh"]
            + cfg.reg_weight * parts["reg"]
            + cfg.cls_theta_weight * parts["cls_theta"]
            + cfg.probiou_weight * parts["probiou"]
            + cfg.angle_weight * parts["angle"]
        )
        return total, parts

    @staticmethod
    def _angle_loss(outputs: dict[str, Tensor], ind: Tensor, target_wh: Tensor, mask: Tensor) -> Tensor:
        if "angle" not in outputs:
            return outputs["hm"].new_zeros((), dtype=torch.float32)
        direction, weight = angle_targets(target_wh, mask)
        return masked_smooth_l1(gather_at_centres(outputs["angle"], ind), direction, weight, beta=0.0)
