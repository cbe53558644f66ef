"""BBAVLoss: hand-derived values, the logits formulation against the plain formula, numerical safety
(the original's NaN), ignore regions, normalisation, and an end-to-end check with encoded targets."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from bbavectors.config import Config, ConfigError, LossConfig, TargetConfig, apply_overrides, validate_config
from bbavectors.losses import (
    BBAVLoss,
    aligned_peak_targets,
    aligned_slot_weights,
    centre_quality_map,
    cyclic_vector_smooth_l1,
    focal_loss_with_logits,
    gather_at_centres,
    masked_bce,
    masked_smooth_l1,
    neighbour_slots,
    probiou_distances,
    slot_alignment,
    soft_peak_targets,
)
from bbavectors.roundtrip import ideal_outputs
from bbavectors.targets import encode_targets
from DOTA_devkit.geometry import obb_to_poly


def _plain_focal(
    logits: torch.Tensor, gt: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CenterNet's formula on probabilities, in float64 (fine for moderate logits)."""
    p = torch.sigmoid(logits.double())
    gt = gt.double()
    pos = gt.eq(1)
    pos_loss = -((1 - p) ** alpha) * torch.log(p)
    neg_loss = -((1 - gt) ** beta) * p**alpha * torch.log(1 - p)
    return torch.where(pos, pos_loss, neg_loss).sum() / max(int(pos.sum()), 1)


def _targets_and_outputs(num_images: int = 2, num_classes: int = 3):
    boxes = obb_to_poly(np.array([[40, 40, 50, 20, 0.3], [90, 70, 30, 30, 0.0], [70, 100, 60, 12, 2.0]]))
    polys = [torch.from_numpy(boxes).float()] * num_images
    classes = [torch.tensor([0, 1, 2])] * num_images
    difficult = [torch.tensor([0, 0, 1])] * num_images
    cfg = replace(TargetConfig(), max_objects=8)
    t = encode_targets(polys, classes, difficult, num_classes, (128, 128), cfg)
    return t, ideal_outputs(t)


# ----------------------------------------------------------------------------------------------
# Focal loss
# ----------------------------------------------------------------------------------------------
def test_focal_hand_derived_values() -> None:
    # One positive at logit 0 (p = 1/2): (1/2)^2 * log 2. One negative with y = 1/2 at logit 0:
    # (1 - 1/2)^4 * (1/2)^2 * log 2. Normalised by one positive.
    logits = torch.zeros(1, 1, 1, 2)
    gt = torch.tensor([[[[1.0, 0.5]]]])
    expected = 0.25 * math.log(2) + 0.0625 * 0.25 * math.log(2)
    assert float(focal_loss_with_logits(logits, gt)) == pytest.approx(expected, rel=1e-6)


def test_focal_matches_plain_formula_on_moderate_logits() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 9, 11, generator=g) * 4
    gt = torch.rand(2, 3, 9, 11, generator=g) ** 3
    gt[0, 1, 4, 5] = gt[1, 2, 0, 0] = gt[1, 0, 8, 10] = 1.0
    for alpha, beta in ((2.0, 4.0), (1.5, 3.0)):
        fast = focal_loss_with_logits(logits, gt, alpha=alpha, beta=beta)
        assert float(fast) == pytest.approx(float(_plain_focal(logits, gt, alpha, beta)), rel=1e-5)


def test_regression_original_focal_nan_on_saturated_sigmoid() -> None:
    """The original applied log to unclamped sigmoid outputs: once a logit saturates float32's sigmoid
    to exactly 0 or 1, log gives -inf and 0 * -inf gives NaN (the "NaN loss" issues)."""
    logits = torch.tensor([[[[120.0, -120.0, 30.0]]]], requires_grad=True)
    gt = torch.tensor([[[[1.0, 0.0, 0.3]]]])
    pred = torch.sigmoid(logits)
    pos = gt.eq(1).float()
    pos_term = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_term = torch.log(1 - pred) * pred**2 * (1 - gt) ** 4 * (1 - pos)
    original = -(pos_term + neg_term).sum()
    assert torch.isnan(original)
    ours = focal_loss_with_logits(logits, gt)
    ours.backward()
    assert torch.isfinite(ours) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("value", [1e4, -1e4])
def test_focal_finite_for_huge_logits(value: float) -> None:
    logits = torch.full((2, 2, 5, 5), value, requires_grad=True)
    gt = torch.zeros(2, 2, 5, 5)
    gt[0, 0, 2, 2] = 1.0
    gt[1, 1, 3, 1] = 0.6
    loss = focal_loss_with_logits(logits, gt)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    if value > 0:  # every negative predicted with certainty: loss ~ their count times the logit
        assert loss.item() > 1e4
    else:  # the one positive missed with certainty: (1 - 0)^2 * 1e4
        assert loss.item() == pytest.approx(1e4, rel=1e-3)


def test_focal_image_without_objects_is_finite_and_unnormalised() -> None:
    logits = torch.randn(1, 2, 6, 6, requires_grad=True)
    gt = torch.zeros(1, 2, 6, 6)
    loss = focal_loss_with_logits(logits, gt)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(float(_plain_focal(logits.detach(), gt)), rel=1e-5)


def test_ignore_region_adds_nothing_even_for_a_huge_wrong_prediction() -> None:
    gt = torch.zeros(1, 2, 8, 8)
    gt[0, 0, 2, 2] = 1.0
    ignore = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    ignore[0, 0, 5:8, 5:8] = True
    base = torch.full((1, 2, 8, 8), -3.0)
    base[0, 0, 2, 2] = 3.0
    wrong = base.clone()
    wrong[0, :, 5:8, 5:8] = 1e4  # certain "object" on the ignored (e.g. difficult) one
    wrong.requires_grad_(True)
    masked = focal_loss_with_logits(wrong, gt, ignore)
    assert masked.item() == focal_loss_with_logits(base, gt, ignore).item()
    masked.backward()
    assert (wrong.grad[0, :, 5:8, 5:8] == 0).all()
    assert focal_loss_with_logits(wrong, gt).item() > 1e4  # without the mask it would dominate


# ----------------------------------------------------------------------------------------------
# Box losses
# ----------------------------------------------------------------------------------------------
def test_gather_at_centres_any_memory_format() -> None:
    feat = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    ind = torch.tensor([[0, 7, 19], [13, 13, 2]])
    expected = torch.stack([feat[b].flatten(1)[:, ind[b]].T for b in range(2)])
    assert torch.equal(gather_at_centres(feat, ind), expected)
    assert torch.equal(gather_at_centres(feat.to(memory_format=torch.channels_last), ind), expected)


def test_smooth_l1_and_bce_hand_values() -> None:
    target = torch.zeros(1, 2, 10)
    pred = torch.zeros(1, 2, 10)
    pred[0, 0, 3] = 0.5  # 0.5 * 0.5^2 = 0.125
    pred[0, 0, 4] = 3.0  # 3 - 0.5 = 2.5
    pred[0, 1, :] = 100.0  # masked out
    mask = torch.tensor([[True, False]])
    assert float(masked_smooth_l1(pred, target, mask)) == pytest.approx((0.125 + 2.5) / 10)
    bce = masked_bce(torch.zeros(1, 2, 1), torch.ones(1, 2, 1), mask)
    assert float(bce) == pytest.approx(math.log(2))


@pytest.mark.parametrize(("beta", "expected"), [
    (1.0, 0.125 + 2.5),  # the original: 0.5 * 0.5^2 / 1, then 3 - 0.5
    (0.25, 0.5 - 0.125 + 3.0 - 0.125),  # both errors above beta: |e| - beta / 2
    (0.0, 0.5 + 3.0),  # plain L1 (CenterNet's)
])
def test_smooth_l1_beta_hand_values(beta: float, expected: float) -> None:
    target, pred = torch.zeros(1, 1, 10), torch.zeros(1, 1, 10)
    pred[0, 0, 3], pred[0, 0, 4] = 0.5, 3.0
    mask = torch.tensor([[True]])
    assert float(masked_smooth_l1(pred, target, mask, beta)) == pytest.approx(expected / 10)
    assert float(cyclic_vector_smooth_l1(pred, target, mask, beta)) == pytest.approx(expected / 10)


def test_smooth_l1_beta_reaches_the_box_terms_of_bbavloss() -> None:
    t = _one_object_targets()
    out = ideal_outputs(t)
    out["reg"][0, 0, 7, 10] += 0.2  # a fifth of a cell off: inside beta 1's quadratic zone
    out["wh"][0, 0, 7, 10] += 0.4
    original = BBAVLoss(LossConfig())(out, t)[1]
    l1 = BBAVLoss(LossConfig(smooth_l1_beta=0.0))(out, t)[1]
    assert float(original["reg"]) == pytest.approx(0.5 * 0.2**2 / 2, rel=1e-4)
    assert float(l1["reg"]) == pytest.approx(0.2 / 2, rel=1e-4)
    assert float(original["wh"]) == pytest.approx(0.5 * 0.4**2 / 10, rel=1e-4)
    assert float(l1["wh"]) == pytest.approx(0.4 / 10, rel=1e-4)


def test_box_losses_exactly_zero_without_objects() -> None:
    pred = torch.randn(2, 5, 10, requires_grad=True)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    loss = masked_smooth_l1(pred, torch.randn(2, 5, 10), mask)
    loss = loss + masked_bce(pred[..., :1], torch.ones(2, 5, 1), mask)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_box_loss_is_a_mean_over_objects() -> None:
    t, out = _targets_and_outputs(num_images=1)
    noisy = {k: v + 0.25 for k, v in out.items()}
    one = BBAVLoss(LossConfig())(noisy, t)[1]
    t2, out2 = _targets_and_outputs(num_images=3)
    noisy2 = {k: v + 0.25 for k, v in out2.items()}
    three = BBAVLoss(LossConfig())(noisy2, t2)[1]
    for key in ("wh", "reg", "cls_theta", "hm"):
        assert float(one[key]) == pytest.approx(float(three[key]), rel=1e-5), key
    assert float(one["wh"]) == pytest.approx(0.5 * 0.25**2, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# BBAVLoss end to end
# ----------------------------------------------------------------------------------------------
def test_bbavloss_ideal_outputs_give_near_zero_box_losses() -> None:
    t, out = _targets_and_outputs()
    total, parts = BBAVLoss(LossConfig())(out, t)
    assert set(parts) == {"hm", "wh", "reg", "cls_theta", "probiou", "angle"}
    assert float(parts["wh"]) == 0.0 and float(parts["reg"]) == 0.0
    assert float(parts["probiou"]) < 1e-5
    assert float(parts["cls_theta"]) < 1e-8
    assert float(parts["hm"]) < 0.05
    bad = {k: torch.zeros_like(v) for k, v in out.items()}
    assert float(BBAVLoss(LossConfig())(bad, t)[0]) > float(total) + 1.0


def test_bbavloss_weights_and_gradients() -> None:
    t, out = _targets_and_outputs()
    g = torch.Generator().manual_seed(1)
    outputs = {k: (torch.randn(v.shape, generator=g)).requires_grad_(True) for k, v in out.items()}
    cfg = LossConfig(hm_weight=2.0, wh_weight=0.1, reg_weight=3.0, cls_theta_weight=0.5, probiou_weight=1.5)
    total, parts = BBAVLoss(cfg)(outputs, t)
    expected = (2.0 * parts["hm"] + 0.1 * parts["wh"] + 3.0 * parts["reg"] + 0.5 * parts["cls_theta"]
                + 1.5 * parts["probiou"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    for v in outputs.values():
        assert v.grad is not None and torch.isfinite(v.grad).all()


def test_bbavloss_bf16_outputs_computed_in_float32() -> None:
    t, out = _targets_and_outputs()
    total32, _ = BBAVLoss(LossConfig())({k: v + 0.1 for k, v in out.items()}, t)
    total16, parts = BBAVLoss(LossConfig())({k: (v + 0.1).bfloat16() for k, v in out.items()}, t)
    assert total16.dtype == torch.float32 and all(p.dtype == torch.float32 for p in parts.values())
    assert total16.item() == pytest.approx(float(total32), rel=0.05)


# ----------------------------------------------------------------------------------------------
# cyclic_vectors: the t, r, b, l labelling may be any cyclic shift of the target's
# ----------------------------------------------------------------------------------------------
def _wh_target() -> torch.Tensor:
    """One object: t = (0, -2), r = (5, 0), b = (0, 2), l = (-5, 0); external w, h = 10, 4."""
    return torch.tensor([[[0.0, -2.0, 5.0, 0.0, 0.0, 2.0, -5.0, 0.0, 10.0, 4.0]]])


def test_cyclic_vectors_accept_every_relabeling_of_the_same_box() -> None:
    target, mask = _wh_target(), torch.tensor([[True]])
    vec = target[..., :8].reshape(1, 1, 4, 2)
    for s in range(4):
        shifted = torch.cat([vec.roll(s, dims=2).reshape(1, 1, 8), target[..., 8:]], dim=-1)
        assert float(cyclic_vector_smooth_l1(shifted, target, mask)) == 0.0
        if s:  # the plain loss calls the same box wrong
            assert float(masked_smooth_l1(shifted, target, mask)) > 1.0


def test_cyclic_vectors_hand_derived_value_and_plain_loss_when_labelling_fits() -> None:
    target, mask = _wh_target(), torch.tensor([[True]])
    pred = target.clone()
    pred[0, 0, 2] = 5.5  # r.x off by 0.5: 0.125
    pred[0, 0, 9] = 7.0  # external h off by 3: 2.5
    assert float(cyclic_vector_smooth_l1(pred, target, mask)) == pytest.approx((0.125 + 2.5) / 10)
    assert float(cyclic_vector_smooth_l1(pred, target, mask)) == pytest.approx(
        float(masked_smooth_l1(pred, target, mask)))
    # A half-way labelling (vectors turned 45 degrees: the "diamond") is wrong for every shift.
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    turned = target[..., :8].reshape(4, 2) @ torch.tensor([[c, s], [-s, c]])
    diamond = torch.cat([turned.reshape(1, 1, 8), target[..., 8:]], dim=-1)
    assert float(cyclic_vector_smooth_l1(diamond, target, mask)) > 0.5


def test_cyclic_vectors_zero_without_objects_and_in_bbavloss() -> None:
    pred = torch.randn(2, 3, 10, requires_grad=True)
    loss = cyclic_vector_smooth_l1(pred, torch.randn(2, 3, 10), torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))
    t, out = _targets_and_outputs()
    noisy = {k: v + 0.25 for k, v in out.items()}
    plain = BBAVLoss(LossConfig())(noisy, t)[1]["wh"]
    cyclic = BBAVLoss(LossConfig(cyclic_vectors=True))(noisy, t)[1]["wh"]
    assert float(cyclic) == pytest.approx(float(plain), rel=1e-6)  # a uniform offset: shift 0 fits best


# ----------------------------------------------------------------------------------------------
# Box regression from the cells around each centre (loss.regress_radius)
# ----------------------------------------------------------------------------------------------
def _one_object_targets(overlap: float = 0.1) -> dict[str, torch.Tensor]:
    """One 40 x 16 px box centred at (42, 30) px: centre cell (10, 7), offset (0.5, 0.5), radius 1."""
    poly = torch.from_numpy(obb_to_poly(np.array([[42.0, 30.0, 40.0, 16.0, 0.0]]))).float()
    cfg = replace(TargetConfig(), max_objects=2, gaussian_overlap=overlap)
    return encode_targets([poly], [torch.tensor([0])], [torch.tensor([0])], 1, (64, 64), cfg)


def test_neighbour_slots_hand_values() -> None:
    t = _one_object_targets()
    assert int(t["ind"][0, 0]) == 7 * 16 + 10 and t["reg"][0, 0].tolist() == pytest.approx([0.5, 0.5])
    slots = neighbour_slots(t, 1, (16, 16))
    k = 2  # slots per image; offsets in the order centre, then (dx, dy) row by row
    ind, weight, reg = slots["ind"][0], slots["weight"][0], slots["reg"][0]
    assert ind.shape == (9 * k,) and slots["wh"].shape == (1, 9 * k, 10)
    assert weight[0] == 1.0 and weight[1] == 0.0  # the object's centre; the unused slot
    # Radius 1, sigma 0.5: edge neighbours exp(-2), corners exp(-4).
    expected = {(-1, -1): math.exp(-4), (0, -1): math.exp(-2), (1, -1): math.exp(-4), (-1, 0): math.exp(-2),
                (1, 0): math.exp(-2), (-1, 1): math.exp(-4), (0, 1): math.exp(-2), (1, 1): math.exp(-4)}
    for n, (dxy, value) in enumerate(expected.items(), start=1):
        dx, dy = dxy
        assert int(ind[n * k]) == (7 + dy) * 16 + 10 + dx
        assert float(weight[n * k]) == pytest.approx(value, rel=1e-5)
        assert float(weight[n * k + 1]) == 0.0
        assert reg[n * k].tolist() == pytest.approx([0.5 - dx, 0.5 - dy])
    assert torch.equal(slots["wh"][0, 3 * k], t["wh"][0, 0])


def test_uniform_neighbour_weight_reaches_single_cell_peaks() -> None:
    """A 12 x 5 px boat has a one-cell peak (radius 0): the heatmap weighs its neighbours 0, the uniform
    weight 1 (its decoded peak lands off the centre cell as often as a big ship's)."""
    poly = torch.from_numpy(obb_to_poly(np.array([[42.0, 30.0, 12.0, 5.0, 0.0]]))).float()
    cfg = replace(TargetConfig(), max_objects=1, gaussian_overlap=0.1)
    t = encode_targets([poly], [torch.tensor([0])], [torch.tensor([0])], 1, (64, 64), cfg)
    assert int((t["hm"] > 0).sum()) == 1
    heat = neighbour_slots(t, 1, (16, 16))["weight"][0]
    uniform = neighbour_slots(t, 1, (16, 16), uniform=True)["weight"][0]
    assert heat.tolist() == [1.0] + [0.0] * 8
    assert uniform.tolist() == [1.0] * 9
    # An ignored neighbour (a difficult object's window) weighs 0 either way.
    t["hm_ignore"] = torch.zeros_like(t["hm_ignore"])
    t["hm_ignore"][0, 0, 7, 11] = True
    uniform = neighbour_slots(t, 1, (16, 16), uniform=True)["weight"][0]
    offsets = [(0, 0)] + [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)]
    assert uniform[offsets.index((1, 0))] == 0.0 and uniform.sum() == 8.0


def test_neighbour_slots_skip_the_map_border_and_other_peaks() -> None:
    polys = obb_to_poly(np.array([[2.0, 30.0, 40.0, 16.0, 0.0], [10.0, 30.0, 40.0, 16.0, 0.0]]))
    cfg = replace(TargetConfig(), max_objects=2, gaussian_overlap=0.1)
    t = encode_targets([torch.from_numpy(polys).float()], [torch.tensor([0, 0])], [torch.tensor([0, 0])], 1,
                       (64, 64), cfg)
    assert t["ind"][0].tolist() == [7 * 16 + 0, 7 * 16 + 2]
    slots = neighbour_slots(t, 1, (16, 16))
    weight = slots["weight"][0].view(9, 2)
    offsets = [(0, 0)] + [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)]
    left = [n for n, (dx, _) in enumerate(offsets) if dx == -1]
    assert weight[left, 0].eq(0).all() and weight[left, 1].gt(0).all()  # the first object is at the border
    # Two cells to the right of the first centre lies the second object's peak: 0 at radius 2.
    wide = neighbour_slots(t, 2, (16, 16))
    offsets2 = [(0, 0)] + [(dx, dy) for dy in range(-2, 3) for dx in range(-2, 3) if (dx, dy) != (0, 0)]
    at_other_peak = offsets2.index((2, 0))
    assert float(wide["weight"][0].view(25, 2)[at_other_peak, 0]) == 0.0
    assert float(wide["weight"][0].view(25, 2)[offsets2.index((1, 0)), 0]) > 0.0


def test_regress_radius_trains_the_cells_around_the_centre() -> None:
    t = _one_object_targets()
    out = ideal_outputs(t)  # a perfect box at the centre cell only
    at_centre = BBAVLoss(LossConfig(regress_radius=0))(out, t)[1]
    around = BBAVLoss(LossConfig(regress_radius=1))(out, t)[1]
    assert float(at_centre["wh"]) == 0.0 and float(at_centre["probiou"]) < 1e-5
    assert float(around["wh"]) > 0.01 and float(around["reg"]) > 0.01 and float(around["probiou"]) > 0.01
    # The same box written at every cell of the 3 x 3 (offsets shifted): zero loss again.
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            x, y = 10 + dx, 7 + dy
            out["wh"][0, :, y, x] = t["wh"][0, 0]
            out["reg"][0, :, y, x] = t["reg"][0, 0] - torch.tensor([dx, dy], dtype=torch.float32)
            out["cls_theta"][0, :, y, x] = out["cls_theta"][0, :, 7, 10]
    perfect = BBAVLoss(LossConfig(regress_radius=1))(out, t)[1]
    assert float(perfect["wh"]) == 0.0 and float(perfect["reg"]) == pytest.approx(0.0, abs=1e-7)
    assert float(perfect["probiou"]) < 1e-5


def test_regress_radius_weights_normalise_to_a_weighted_mean() -> None:
    pred = torch.tensor([[[1.0], [3.0]]])
    target = torch.zeros(1, 2, 1)
    weight = torch.tensor([[1.0, 0.25]])
    # smooth L1: 0.5 and 2.5; weighted mean (0.5 + 0.25 * 2.5) / 1.25 = 0.9.
    assert float(masked_smooth_l1(pred, target, weight)) == pytest.approx(0.9)


# ----------------------------------------------------------------------------------------------
# Quality-aware heatmap peaks (loss.hm_quality)
# ----------------------------------------------------------------------------------------------
def test_quality_focal_loss_at_quality_one_is_the_centernet_focal_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8) * 3
    target = torch.rand(2, 3, 8, 8) * 0.9
    target[0, 1, 2, 3] = 1.0
    target[1, 2, 5, 5] = 1.0
    plain = focal_loss_with_logits(logits, target)
    with_ones = focal_loss_with_logits(logits, target, quality=torch.ones(2, 1, 8, 8))
    assert float(with_ones) == pytest.approx(float(plain), rel=1e-6)
    assert float(plain) == pytest.approx(float(_plain_focal(logits, target)), rel=1e-5)


def test_quality_focal_loss_is_smallest_where_the_peak_equals_the_quality() -> None:
    target = torch.zeros(1, 1, 3, 3)
    target[0, 0, 1, 1] = 1.0
    quality = torch.full((1, 1, 3, 3), 0.6)

    def loss_at(p: float) -> torch.Tensor:
        logits = torch.full((1, 1, 3, 3), -20.0)
        logits[0, 0, 1, 1] = math.log(p / (1 - p))
        logits.requires_grad_(True)
        value = focal_loss_with_logits(logits, target, quality=quality)
        value.backward()
        assert logits.grad is not None
        return torch.stack([value.detach(), logits.grad[0, 0, 1, 1]])

    at_q, below, above = loss_at(0.6), loss_at(0.5), loss_at(0.7)
    assert float(at_q[1]) == pytest.approx(0.0, abs=1e-6)  # stationary at p = q
    assert float(below[1]) < 0 < float(above[1])  # pulled up from below, down from above
    assert float(at_q[0]) < float(below[0]) and float(at_q[0]) < float(above[0])
    # By hand at p = q = 0.6: |q - p|^2 = 0, so 0 whatever the entropy term.
    assert float(at_q[0]) == pytest.approx(0.0, abs=1e-7)
    # At p = 0.5: -(0.1^2) * (0.6 log 0.5 + 0.4 log 0.5) = 0.01 * log 2 (the negatives add ~0).
    assert float(below[0]) == pytest.approx(0.01 * math.log(2.0), rel=1e-4)


def test_centre_quality_map_writes_valid_slots_only() -> None:
    quality = torch.tensor([[0.3, 0.9], [0.5, 0.7]])
    ind = torch.tensor([[5, 0], [0, 15]])
    mask = torch.tensor([[True, False], [True, True]])
    out = centre_quality_map(quality, ind, mask, (4, 4))
    assert out.shape == (2, 1, 4, 4)
    flat = out.flatten(1)
    assert float(flat[0, 5]) == pytest.approx(0.3)
    assert float(flat[0, 0]) == 1.0  # the invalid slot (ind 0) leaves cell 0 alone
    assert float(flat[1, 0]) == pytest.approx(0.5) and float(flat[1, 15]) == pytest.approx(0.7)
    assert int((flat != 1.0).sum()) == 3


def test_hm_quality_follows_the_box_predicted_at_the_peak() -> None:
    t = _one_object_targets()
    out = ideal_outputs(t)
    plain, quality = BBAVLoss(LossConfig()), BBAVLoss(LossConfig(hm_quality=True))
    # A perfect box: quality 1, the same heatmap loss as the original.
    assert float(quality(out, t)[1]["hm"]) == pytest.approx(float(plain(out, t)[1]["hm"]), rel=1e-4)
    # A loose box at the peak: the peak's target drops below 1, and a confident peak now costs more.
    loose = {k: v.clone() for k, v in out.items()}
    loose["wh"][0, :8, 7, 10] *= 0.5
    loose["wh"].requires_grad_(True)
    loose["hm"].requires_grad_(True)
    parts = quality(loose, t)[1]
    assert float(parts["hm"].detach()) > float(plain(loose, t)[1]["hm"].detach()) + 1e-3
    # The quality is a target, not a path: the heatmap term sends no gradient into the box.
    to_hm, to_wh = torch.autograd.grad(parts["hm"], [loose["hm"], loose["wh"]], allow_unused=True)
    assert to_hm is not None and float(to_hm.abs().sum()) > 0
    assert to_wh is None or float(to_wh.abs().sum()) == 0.0


def test_hm_quality_with_regress_radius_reads_the_centre_slots() -> None:
    t = _one_object_targets()
    out = ideal_outputs(t)
    out["wh"][0, :8, 7, 10] *= 0.5
    at_centre = BBAVLoss(LossConfig(hm_quality=True))(out, t)[1]["hm"]
    around = BBAVLoss(LossConfig(hm_quality=True, regress_radius=1))(out, t)[1]["hm"]
    assert float(around) == pytest.approx(float(at_centre), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Task-aligned peaks (loss.peak_assign: aligned)
# ----------------------------------------------------------------------------------------------
def _aligned_inputs(out: dict[str, torch.Tensor], t: dict[str, torch.Tensor]):
    slots = neighbour_slots(t, 1, (16, 16), uniform=True)
    distances = probiou_distances(gather_at_centres(out["reg"], slots["ind"]),
                                  gather_at_centres(out["wh"], slots["ind"]), slots["reg"], slots["wh"],
                                  slots["weight"])
    return slots, distances


def test_aligned_peak_stays_at_the_centre_when_its_box_fits_best() -> None:
    t = _one_object_targets()
    out = ideal_outputs(t)
    slots, distances = _aligned_inputs(out, t)
    alignment = slot_alignment(out["hm"], t, slots, distances)
    assert torch.equal(aligned_peak_targets(t, slots, alignment), t["hm"])
    aligned = LossConfig(regress_radius=1, neighbour_weight="uniform", peak_assign="aligned")
    centre = replace(aligned, peak_assign="centre")
    assert float(BBAVLoss(aligned)(out, t)[0]) == pytest.approx(float(BBAVLoss(centre)(out, t)[0]), rel=1e-6)


def test_aligned_peak_moves_to_the_neighbour_with_the_better_box() -> None:
    """The centre cell (7, 10) predicts a box half the size; the cell to its right, scored as high, the
    exact box: that cell becomes the peak (1), the centre neutral (0.99), the rest of the Gaussian stays."""
    t = _one_object_targets()
    out = ideal_outputs(t)
    out["wh"][0, :, 7, 11] = out["wh"][0, :, 7, 10]
    out["reg"][0, :, 7, 11] = out["reg"][0, :, 7, 10] - torch.tensor([1.0, 0.0])
    out["hm"][0, 0, 7, 11] = out["hm"][0, 0, 7, 10]
    out["wh"][0, :8, 7, 10] *= 0.5
    slots, distances = _aligned_inputs(out, t)
    target = aligned_peak_targets(t, slots, slot_alignment(out["hm"], t, slots, distances))
    assert float(target[0, 0, 7, 11]) == 1.0 and float(target[0, 0, 7, 10]) == pytest.approx(0.99)
    assert int(target.eq(1.0).sum()) == 1  # still one positive per object
    changed = (target != t["hm"])
    changed[0, 0, 7, 10:12] = False
    assert not changed.any()
    # The loss now pulls the new peak up and leaves the old one alone (its negative weight is ~0).
    logits = out["hm"].clone().fill_(0.0).requires_grad_(True)
    cfg = LossConfig(regress_radius=1, neighbour_weight="uniform", peak_assign="aligned")
    grad, = torch.autograd.grad(BBAVLoss(cfg)({**out, "hm": logits}, t)[1]["hm"], [logits])
    assert float(grad[0, 0, 7, 11]) < 0 and abs(float(grad[0, 0, 7, 10])) < 1e-6


def test_aligned_peak_needs_the_regression_square() -> None:
    with pytest.raises(ConfigError, match="needs loss.regress_radius >= 1"):
        validate_config(apply_overrides(Config(), ["loss.peak_assign=aligned"]))
    with pytest.raises(ConfigError, match="centre or aligned"):
        validate_config(apply_overrides(Config(), ["loss.peak_assign=best"]))
    with pytest.raises(ConfigError, match="use one of the two"):
        validate_config(apply_overrides(Config(), ["loss.peak_assign=aligned", "loss.regress_radius=1",
                                                   "loss.hm_quality=true"]))
    validate_config(apply_overrides(Config(), ["loss.peak_assign=aligned", "loss.regress_radius=1"]))


# ----------------------------------------------------------------------------------------------
# Several soft positives per object (loss.peak_topk)
# ----------------------------------------------------------------------------------------------
def _hand_alignment() -> torch.Tensor:
    """Object 0 of :func:`_one_object_targets` (slot 1 is unused: -1): the cell right of the centre
    aligns best (0.4), the centre 0.2, the cell below it 0.1, the other six 0.05."""
    per_group = [0.2, 0.05, 0.05, 0.05, 0.05, 0.4, 0.05, 0.1, 0.05]  # centre, then (dx, dy) row by row
    return torch.tensor([[v for a in per_group for v in (a, -1.0)]])


def test_soft_peak_targets_hand_values() -> None:
    t = _one_object_targets()
    slots = neighbour_slots(t, 1, (16, 16), uniform=True)
    hm, quality, counted = soft_peak_targets(t, slots, _hand_alignment(), topk=3)
    # The best cell (7, 11) and the next two, the centre (7, 10) and the cell below it (8, 10).
    assert torch.nonzero(hm[0, 0] == 1.0).tolist() == [[7, 10], [7, 11], [8, 10]]
    assert float(quality[0, 0, 7, 11]) == 1.0
    assert float(quality[0, 0, 7, 10]) == pytest.approx(0.5)
    assert float(quality[0, 0, 8, 10]) == pytest.approx(0.25)
    assert int(quality.ne(1.0).sum()) == 2
    assert torch.nonzero(counted[0, 0]).tolist() == [[7, 11]]  # one counted positive per object
    changed = hm != t["hm"]
    changed[0, 0, 7, 10:12] = False
    changed[0, 0, 8, 10] = False
    assert not changed.any()
    # topk 1 is the single best-aligned peak.
    hm1, quality1, counted1 = soft_peak_targets(t, slots, _hand_alignment(), topk=1)
    assert torch.equal(hm1, aligned_peak_targets(t, slots, _hand_alignment()))
    assert bool(quality1.eq(1.0).all()) and int(counted1.sum()) == 1


def test_soft_positives_are_pulled_towards_their_relative_alignment() -> None:
    """At p = 0.5 everywhere: the best cell is pulled up, the centre (q = 0.5) left alone, the cell
    below (q = 0.25) pushed down; the loss is divided by the one object, not by its three positives."""
    t = _one_object_targets()
    slots = neighbour_slots(t, 1, (16, 16), uniform=True)
    hm, quality, counted = soft_peak_targets(t, slots, _hand_alignment(), topk=3)
    logits = torch.zeros_like(hm, requires_grad=True)
    loss = focal_loss_with_logits(logits, hm, quality=quality, counted=counted)
    grad, = torch.autograd.grad(loss, [logits])
    assert float(grad[0, 0, 7, 11]) < 0
    assert abs(float(grad[0, 0, 7, 10])) < 1e-7
    assert float(grad[0, 0, 8, 10]) > 0
    every = focal_loss_with_logits(logits, hm, quality=quality)
    assert float(loss.detach()) == pytest.approx(3 * float(every.detach()), rel=1e-6)


def test_peak_topk_one_is_the_aligned_peak_loss_and_more_positives_change_only_the_heatmap() -> None:
    t = _one_object_targets()
    out = ideal_outputs(t)
    one = LossConfig(regress_radius=1, neighbour_weight="uniform", peak_assign="aligned")
    base = BBAVLoss(one)(out, t)[1]
    assert float(BBAVLoss(replace(one, peak_topk=1))(out, t)[1]["hm"]) == float(base["hm"])
    nine = BBAVLoss(replace(one, peak_topk=9))(out, t)[1]
    assert torch.isfinite(nine["hm"]) and float(nine["hm"]) != float(base["hm"])
    for name in ("wh", "reg", "cls_theta", "probiou"):
        assert float(nine[name]) == float(base[name])


def test_peak_topk_is_checked() -> None:
    aligned = ["loss.peak_assign=aligned", "loss.regress_radius=1"]
    validate_config(apply_overrides(Config(), aligned + ["loss.peak_topk=9"]))
    with pytest.raises(ConfigError, match="from 1 to the"):
        validate_config(apply_overrides(Config(), aligned + ["loss.peak_topk=10"]))
    with pytest.raises(ConfigError, match="from 1 to the"):
        validate_config(apply_overrides(Config(), aligned + ["loss.peak_topk=0"]))
    with pytest.raises(ConfigError, match="needs loss.peak_assign: aligned"):
        validate_config(apply_overrides(Config(), ["loss.regress_radius=1", "loss.peak_topk=3"]))


# ----------------------------------------------------------------------------------------------
# Alignment-weighted regression (loss.neighbour_weight: aligned)
# ----------------------------------------------------------------------------------------------
def test_aligned_slot_weights_hand_values() -> None:
    """Two objects (K = 2), three groups: object 0 aligns 0.5 / 0.25 / unusable, object 1 underflows."""
    alignment = torch.tensor([[0.5, 0.0, 0.25, 0.0, -1.0, -1.0]])  # group-major: (g0 o0, g0 o1, g1 o0, ...)
    weights = aligned_slot_weights(alignment, k=2)
    # Object 0: 0.5 / 0.5, 0.25 / 0.5, unusable; object 1: every usable slot 1, the unusable one 0.
    assert weights.tolist() == [[1.0, 1.0, 0.5, 1.0, 0.0, 0.0]]


def test_aligned_neighbour_weight_learns_the_box_least_where_it_fits_worst() -> None:
    """All nine cells of the square score alike and predict the exact box, but the cell right of the
    centre predicts a box half the size: with aligned weights that cell's share of the box loss is its
    alignment over the best (a few percent), with uniform weights one ninth."""
    t = _one_object_targets()
    out = ideal_outputs(t)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out["wh"][0, :, 7 + dy, 10 + dx] = out["wh"][0, :, 7, 10]
            out["reg"][0, :, 7 + dy, 10 + dx] = out["reg"][0, :, 7, 10] - torch.tensor([float(dx), float(dy)])
            out["hm"][0, 0, 7 + dy, 10 + dx] = out["hm"][0, 0, 7, 10]
    out["wh"][0, :8, 7, 11] *= 0.5
    slots, distances = _aligned_inputs(out, t)
    weights = aligned_slot_weights(slot_alignment(out["hm"], t, slots, distances), k=2)
    right = 2 * 5  # the group of offset (1, 0) is the sixth (centre first, then row by row), K = 2
    assert float(weights[0, 0]) == 1.0 and 0.0 < float(weights[0, right]) < 0.2
    good = [2 * g for g in range(9) if g != 5]
    assert weights[0, good].tolist() == pytest.approx([1.0] * 8)
    uniform = LossConfig(regress_radius=1, neighbour_weight="uniform", peak_assign="aligned")
    aligned = replace(uniform, neighbour_weight="aligned")
    wh = out["wh"].clone().requires_grad_(True)
    grads = {}
    for cfg in (uniform, aligned):
        parts = BBAVLoss(cfg)({**out, "wh": wh}, t)[1]
        grads[cfg.neighbour_weight], = torch.autograd.grad(parts["wh"], [wh])
    # Only the spoilt cell has an error: its gradient shrinks by its weight (and the sum of weights,
    # 8 + w against 9).
    g_uniform = float(grads["uniform"][0, :, 7, 11].abs().sum())
    g_aligned = float(grads["aligned"][0, :, 7, 11].abs().sum())
    w = float(weights[0, right])
    assert g_uniform > 0 and g_aligned == pytest.approx(g_uniform * w * 9 / (8 + w), rel=1e-4)


def test_aligned_neighbour_weight_needs_aligned_peaks() -> None:
    with pytest.raises(ConfigError, match="needs loss.peak_assign: aligned"):
        validate_config(apply_overrides(Config(), ["loss.neighbour_weight=aligned", "loss.regress_radius=1"]))
    with pytest.raises(ConfigError, match="heatmap, uniform or aligned"):
        validate_config(apply_overrides(Config(), ["loss.neighbour_weight=best"]))
    validate_config(apply_overrides(Config(), ["loss.neighbour_weight=aligned", "loss.regress_radius=1",
                                               "loss.peak_assign=aligned"]))
