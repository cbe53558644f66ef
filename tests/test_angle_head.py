"""The optional angle head (``model.angle_head``): its geometry (bbavectors.probiou), loss, decode,
round trip, test-time augmentation and ONNX export.

Hand values: a box 8 wide and 4 high turned by 30 degrees has its long side at ``phi = 30``, so
the head's target is ``(cos 60, sin 60) = (0.5, 0.866)``; its vectors' covariance is
``R diag(16, 4) / 3 R^T``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_tta import CFG as TTA_CFG
from test_tta import SIDE, _best_ious, _moved, _polygons

from bbavectors.config import Config, ConfigError, LossConfig, TargetConfig, apply_overrides, validate_config
from bbavectors.decode import decode_topk
from bbavectors.geometry import tlrb_to_poly
from bbavectors.inference import tta as tta_mod
from bbavectors.inference.tta import View, merge_view_outputs, views_for
from bbavectors.losses import BBAVLoss, angle_targets
from bbavectors.models.builder import build_model
from bbavectors.probiou import covariance_direction, direction_covariance, direction_rectangle, tlrb_gaussian
from bbavectors.roundtrip import ideal_outputs, roundtrip_polygons
from bbavectors.targets import encode_targets
from DOTA_devkit.geometry import obb_to_poly, poly_iou_matrix


def _box_vectors(w: float, h: float, degrees: float) -> torch.Tensor:
    """``t, r, b, l`` of a ``w x h`` box (``w`` along ``phi``) as ``(4, 2)``."""
    phi = math.radians(degrees)
    u = torch.tensor([math.cos(phi), math.sin(phi)])
    v = torch.tensor([-math.sin(phi), math.cos(phi)])
    return torch.stack([-h / 2 * v, w / 2 * u, h / 2 * v, -w / 2 * u])


def test_direction_of_the_worked_example() -> None:
    _, cov = tlrb_gaussian(torch.zeros(2), _box_vectors(8, 4, 30))
    direction, defined = covariance_direction(cov)
    torch.testing.assert_close(direction, torch.tensor([0.5, math.sqrt(3) / 2]))
    assert bool(defined)
    # The same axis turned half a turn, and the short side given as "w": the same long axis.
    _, cov2 = tlrb_gaussian(torch.zeros(2), _box_vectors(4, 8, 120))
    torch.testing.assert_close(covariance_direction(cov2)[0], direction)
    # A square has no long axis.
    _, square = tlrb_gaussian(torch.zeros(2), _box_vectors(5, 5, 17))
    assert not bool(covariance_direction(square)[1])


def test_direction_rectangle_of_its_own_direction_is_the_box() -> None:
    vectors = _box_vectors(8, 4, 30)
    _, cov = tlrb_gaussian(torch.zeros(2), vectors)
    direction = torch.tensor([0.5, math.sqrt(3) / 2]) * 2.5  # any length
    torch.testing.assert_close(direction_rectangle(cov, direction), vectors)


def test_direction_rectangle_turns_a_parallelogram_into_a_rectangle() -> None:
    # A parallelogram (vectors skewed by 10 degrees) read along 0 degrees: a rectangle whose sides
    # carry the parallelogram's spread along x and along y.
    t, b = torch.tensor([0.7, -2.0]), torch.tensor([-0.7, 2.0])
    vectors = torch.stack([t, torch.tensor([4.0, 0.0]), b, torch.tensor([-4.0, 0.0])])
    _, cov = tlrb_gaussian(torch.zeros(2), vectors)
    out = direction_rectangle(cov, torch.tensor([1.0, 0.0]))
    half_long = math.sqrt(3 * cov[0, 0].item())
    half_short = math.sqrt(3 * cov[1, 1].item())
    torch.testing.assert_close(out, torch.tensor([[0.0, -half_short], [half_long, 0.0], [0.0, half_short],
                                                  [-half_long, 0.0]]))
    corners = tlrb_to_poly(torch.zeros(2), out).reshape(4, 2)
    edges = corners.roll(-1, 0) - corners
    assert torch.allclose((edges * edges.roll(-1, 0)).sum(1), torch.zeros(4), atol=1e-5)  # right angles


@pytest.mark.parametrize("degrees", [0.0, 30.0, 90.0, 145.0])
def test_direction_covariance_is_the_decoded_rectangles(degrees: float) -> None:
    # A skewed parallelogram read along a direction: the covariance the loss uses is the one of the
    # rectangle the decoder draws, and its gradient is finite at every angle (90 degrees included).
    t, b = torch.tensor([0.7, -2.0]), torch.tensor([-0.7, 2.0])
    vectors = torch.stack([t, torch.tensor([4.0, 0.3]), b, torch.tensor([-4.0, -0.3])])
    _, cov = tlrb_gaussian(torch.zeros(2), vectors)
    rad = math.radians(2 * degrees)
    direction = torch.tensor([math.cos(rad), math.sin(rad)], requires_grad=True)
    _, drawn = tlrb_gaussian(torch.zeros(2), direction_rectangle(cov, direction.detach()))
    got = direction_covariance(cov, direction)
    torch.testing.assert_close(got, drawn, atol=1e-5, rtol=1e-5)
    got.sum().backward()
    assert direction.grad is not None and torch.isfinite(direction.grad).all()


def test_heads_and_builder() -> None:
    cfg = Config()
    cfg.model.backbone, cfg.model.head_width = "resnet18", 8
    plain = build_model(cfg, 2)
    assert "angle" not in plain(torch.randn(1, 3, 64, 64))
    cfg.model.angle_head = True
    out = build_model(cfg, 2)(torch.randn(1, 3, 64, 64))
    assert out["angle"].shape == (1, 2, 16, 16)


def test_angle_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="loss.angle_weight"):
        validate_config(apply_overrides(Config(), ["loss.angle_weight=-1"]))
    with pytest.raises(ConfigError, match="needs model.angle_head"):
        validate_config(apply_overrides(Config(), ["loss.angle_probiou=true"]))
    validate_config(apply_overrides(Config(), ["loss.angle_probiou=true", "model.angle_head=true"]))


def _one_box_targets(degrees: float) -> dict[str, torch.Tensor]:
    obb = np.array([[30.3, 33.7, 40.0, 12.0, math.radians(degrees)]])
    poly = torch.as_tensor(obb_to_poly(obb), dtype=torch.float32)
    zeros = torch.zeros(1, dtype=torch.long)
    return encode_targets([poly], [zeros], [zeros], 1, (64, 64), replace(TargetConfig(), min_size=0.5))


def test_loss_hand_values() -> None:
    targets = _one_box_targets(25.0)
    outputs = ideal_outputs(targets, angle=True)
    direction, weight = angle_targets(targets["wh"], targets["mask"])
    torch.testing.assert_close(direction[0, 0], torch.tensor([math.cos(math.radians(50)),
                                                              math.sin(math.radians(50))]), atol=1e-5, rtol=0)
    assert weight[0, 0] == 1 and weight[0, 1:].sum() == 0
    loss = BBAVLoss(LossConfig(angle_weight=2.0))
    total, parts = loss(outputs, targets)
    assert float(parts["angle"]) < 1e-6
    # The head pointing 90 degrees off (2 phi 180 degrees off): L1 |2 cos| + |2 sin| over 2 channels.
    wrong = dict(outputs, angle=-outputs["angle"])
    total_wrong, parts_wrong = loss(wrong, targets)
    c, s = math.cos(math.radians(50)), math.sin(math.radians(50))
    assert float(parts_wrong["angle"]) == pytest.approx((2 * c + 2 * s) / 2, rel=1e-4)
    assert float(total_wrong - total) == pytest.approx(2.0 * float(parts_wrong["angle"]), rel=1e-4)
    # Without the head the part is 0 and the total is the four heads' loss.
    four = {k: v for k, v in outputs.items() if k != "angle"}
    total_four, parts_four = loss(four, targets)
    assert float(parts_four["angle"]) == 0.0 and float(total_four) == pytest.approx(float(total))


def test_probiou_of_the_decoded_box() -> None:
    # loss.angle_probiou: the ProbIoU term sees the head's angle (0 when right, larger when 10
    # degrees off); without the option it sees the vectors only and does not move.
    targets = _one_box_targets(25.0)
    outputs = ideal_outputs(targets, angle=True)
    turned = outputs["angle"].clone()
    cell = turned.abs().sum(1) > 0
    turned[:, 0][cell], turned[:, 1][cell] = math.cos(math.radians(70)), math.sin(math.radians(70))
    with_angle, plain = BBAVLoss(LossConfig(angle_probiou=True)), BBAVLoss(LossConfig())
    assert float(with_angle(outputs, targets)[1]["probiou"]) < 1e-4
    off = float(with_angle(dict(outputs, angle=turned), targets)[1]["probiou"])
    assert off > 0.05
    assert float(plain(dict(outputs, angle=turned), targets)[1]["probiou"]) < 1e-4
    angle = turned.clone().requires_grad_(True)
    with_angle(dict(outputs, angle=angle), targets)[1]["probiou"].backward()
    assert angle.grad is not None and float(angle.grad.abs().sum()) > 0


def test_loss_gradient_reaches_the_head_only_at_the_centre() -> None:
    targets = _one_box_targets(25.0)
    outputs = ideal_outputs(targets, angle=True)
    angle = torch.zeros_like(outputs["angle"], requires_grad=True)
    _, parts = BBAVLoss(LossConfig())(dict(outputs, angle=angle), targets)
    parts["angle"].backward()
    assert angle.grad is not None
    assert int((angle.grad.abs().sum(1) > 0).sum()) == 1


@pytest.mark.parametrize("degrees", [3.0, 25.0, 47.0, 89.0, 133.0])
def test_round_trip_with_the_angle_head(degrees: float) -> None:
    rng = np.random.default_rng(int(degrees))
    obbs = np.array([[0.0, 0.0, rng.uniform(12, 60), rng.uniform(4, 11), math.radians(degrees + d)]
                     for d in rng.uniform(-2, 2, 20)])
    polys = obb_to_poly(obbs)
    decoded, encoded = roundtrip_polygons(polys, replace(TargetConfig(), min_size=0.5), angle=True)
    iou = np.diag(poly_iou_matrix(decoded, encoded))
    assert iou.min() > 0.98


def test_decode_follows_the_head_not_the_vectors() -> None:
    # Perfect vectors of a 25 degree box, the head saying 35 degrees: the box turns by 10 degrees.
    targets = _one_box_targets(25.0)
    outputs = ideal_outputs(targets, angle=True)
    turned = outputs["angle"].clone()
    cell = turned.abs().sum(1) > 0
    turned[:, 0][cell] = math.cos(math.radians(70))
    turned[:, 1][cell] = math.sin(math.radians(70))
    found, _, _ = decode_topk(dict(outputs, angle=turned), 1, 0.5)
    corners = found[0, 0].reshape(4, 2)
    long_edge = max((corners[(i + 1) % 4] - corners[i] for i in range(4)), key=lambda e: float(e.norm()))
    degrees = math.degrees(math.atan2(float(long_edge[1]), float(long_edge[0]))) % 180
    assert degrees == pytest.approx(35.0, abs=1e-3)


def _perfect_angle_outputs(polygons: torch.Tensor, view: View) -> dict[str, torch.Tensor]:
    moved = _moved(polygons, view)
    n = len(moved)
    zeros = torch.zeros(n, dtype=torch.long)
    return ideal_outputs(encode_targets([moved], [zeros], [zeros], 1, (SIDE, SIDE), TTA_CFG), angle=True)


def _merged(views: tuple[View, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    polygons = _polygons()
    merged = merge_view_outputs([_perfect_angle_outputs(polygons, v) for v in views], views, 4)
    assert "angle" in merged
    found, scores, _ = decode_topk(merged, 10, 0.5)
    return found[0][scores[0] > 0.5], polygons


@pytest.mark.parametrize("mode", ["flips", "dihedral"])
def test_tta_maps_the_angle_back(mode: str) -> None:
    found, polygons = _merged(views_for(mode))
    assert len(found) == len(polygons)
    assert _best_ious(found, polygons).min() > 0.97
    for view in views_for("dihedral"):
        single, _ = _merged((view,))
        assert _best_ious(single, polygons).min() > 0.97, view


def test_tta_without_the_angle_mapping_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tta_mod, "_direction_back", lambda direction, a_inv: direction)
    found, polygons = _merged((View(0, True),))
    assert _best_ious(found, polygons).min() < 0.6


def test_exported_graph_decodes_with_the_angle_head(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from bbavectors.export.check import compare_graph_outputs
    from bbavectors.export.onnx_export import ExportWrapper, export_onnx

    cfg = Config()
    cfg.model.backbone, cfg.model.head_width, cfg.model.angle_head = "mobilenet_v2", 8, True
    torch.manual_seed(8)
    model = build_model(cfg, 1).eval()
    with torch.no_grad():
        model.heads.hm[-1].weight.mul_(30.0)
    path = export_onnx(model, tmp_path / "angle.onnx", input_size=128, top_k=20, mean=cfg.data.mean,
                       std=cfg.data.std, score_thresh=0.01, classes=["ship"])
    wrapper = ExportWrapper(model, 20, 0.0, cfg.data.mean, cfg.data.std)  # every box from the head
    gen = torch.Generator().manual_seed(8)
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8, generator=gen)
    with torch.no_grad():
        polygons, scores, _ = wrapper(images)
    real = scores > 0
    assert real.any()
    corners = polygons[real].reshape(-1, 4, 2)
    edges = corners.roll(-1, 1) - corners
    dots = (edges * edges.roll(-1, 1)).sum(-1).abs()
    assert float(dots.max()) < 1e-2 * float((edges * edges).sum(-1).max())  # rectangles
    check = compare_graph_outputs(ExportWrapper(model, 20, 0.5, cfg.data.mean, cfg.data.std), path, images,
                                  "angle head")
    assert check.ok(box_tol=1e-2, score_tol=1e-5), check.notes
