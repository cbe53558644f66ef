"""Test-time augmentation (bbavectors.inference.tta): views, their inverse, and the map-level merge.

The merge is checked against a perfect network: for every view the boxes are moved by the view's
own point map, encoded, turned into the logits a perfect network would produce, and merged; the
decode must give the original boxes back (rotated ones as rectangles, near-axis ones as their
external box). A broken inverse (a view mapped back without its flip) must fail the same check.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_inference import BlobModel, fake_predictor, match, rect, texture, tiny_predictor, white_rects_scene

from bbavectors.config import TargetConfig
from bbavectors.decode import decode_topk
from bbavectors.inference import tta as tta_mod
from bbavectors.inference.predictor import Predictor
from bbavectors.inference.tta import View, apply_view, merge_view_outputs, view_back, views_for
from bbavectors.probiou import covariance_rectangle, gaussian_rectangle, tlrb_gaussian
from bbavectors.roundtrip import ideal_outputs
from bbavectors.targets import encode_targets
from DOTA_devkit.geometry import obb_to_poly, poly_iou_matrix

SIDE = 128
CFG = replace(TargetConfig(), min_size=0.5)
# (cx, cy, w, h, angle in degrees): rotated ships, a near-axis one (decoded as its external box),
# a small one; centres off the cell borders.
BOXES = [(30.3, 41.7, 40.0, 12.0, 25.0), (90.9, 33.2, 28.0, 9.0, -63.0), (61.4, 97.6, 36.0, 14.0, 0.5),
         (101.1, 101.3, 14.0, 5.0, 120.0)]


def _polygons() -> torch.Tensor:
    obbs = np.array([[cx, cy, w, h, np.radians(a)] for cx, cy, w, h, a in BOXES])
    return torch.as_tensor(obb_to_poly(obbs), dtype=torch.float32)


def _moved(polygons: torch.Tensor, view: View, side: int = SIDE) -> torch.Tensor:
    a, s = view.matrix()
    points = polygons.reshape(-1, 4, 2)
    return (points @ a.t() + s * side).reshape(-1, 8)


def _perfect_outputs(polygons: torch.Tensor, view: View) -> dict[str, torch.Tensor]:
    moved = _moved(polygons, view)
    n = len(moved)
    targets = encode_targets([moved], [torch.zeros(n, dtype=torch.long)], [torch.zeros(n, dtype=torch.long)],
                             1, (SIDE, SIDE), CFG)
    return ideal_outputs(targets)


def _merged_polygons(views: tuple[View, ...], polygons: torch.Tensor) -> torch.Tensor:
    merged = merge_view_outputs([_perfect_outputs(polygons, v) for v in views], views, 4)
    found, scores, _ = decode_topk(merged, 10, 0.5)
    return found[0][scores[0] > 0.5]


def _best_ious(found: torch.Tensor, polygons: torch.Tensor) -> np.ndarray:
    iou = poly_iou_matrix(polygons.double().numpy(), found.double().numpy())
    return iou.max(axis=1)


def test_view_matrix_is_the_image_operation() -> None:
    # Pixel (col 2, row 5) of an 8 x 8 image, centre (2.5, 5.5): the view's matrix must send it to
    # the centre of the pixel where apply_view puts that value.
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 5, 2] = 1.0
    for view in views_for("dihedral"):
        moved = apply_view(image, view)
        row, col = (moved[0, 0] == 1).nonzero()[0].tolist()
        a, s = view.matrix()
        x, y = (a @ torch.tensor([2.5, 5.5]) + s * 8).tolist()
        assert (x, y) == (col + 0.5, row + 0.5), view
        assert torch.equal(view_back(moved, view), image), view


def test_hand_worked_flip() -> None:
    # The module docstring's example: S = 8, d = 4, a centre at x = 2.6 px, the horizontal flip.
    view = View(0, True)
    reg = torch.zeros(1, 2, 2, 2)
    reg[0, 0, 0, 1] = 0.35  # the flipped view sees it in column 1 at 0.35
    wh = torch.zeros(1, 10, 2, 2)
    wh[0, :8, 0, 1] = torch.tensor([0.05, -0.15, 0.75, 0.25, -0.05, 0.15, -0.75, -0.25])  # a rectangle
    hm = torch.full((1, 1, 2, 2), -10.0)
    hm[0, 0, 0, 1] = 10.0
    out = {"hm": hm, "wh": wh, "reg": reg, "cls_theta": torch.full((1, 1, 2, 2), 10.0)}
    merged = merge_view_outputs([out], (view,), 4)
    assert merged["reg"][0, 0, 0, 0].item() == pytest.approx(0.65)
    assert merged["hm"][0, 0, 0, 0].item() == pytest.approx(10.0, abs=1e-3)
    # r' = (3, 1) px = (0.75, 0.25) cells; mapped back (-0.75, 0.25): the same segment as the
    # rectangle's long half side, up to its sign.
    long_half = merged["wh"][0, 2:4, 0, 0]
    assert torch.allclose(long_half.abs(), torch.tensor([0.75, 0.25]), atol=1e-5)
    assert long_half[0] * long_half[1] < 0


@pytest.mark.parametrize("mode", ["none", "flips", "dihedral"])
def test_perfect_network_boxes_come_back(mode: str) -> None:
    polygons = _polygons()
    found = _merged_polygons(views_for(mode), polygons)
    assert len(found) == len(polygons)
    assert _best_ious(found, polygons).min() > 0.97


def test_each_single_view_maps_back() -> None:
    polygons = _polygons()
    for view in views_for("dihedral"):
        assert _best_ious(_merged_polygons((view,), polygons), polygons).min() > 0.97, view


def test_a_grid_that_flips_onto_itself_is_required() -> None:
    # An aligned grid (cells centred on their receptive fields, offset 1.5 px) is not symmetric under
    # x -> S - x: a flipped view's cells fall between the original ones, and averaging would mix
    # neighbouring cells.
    out = _perfect_outputs(_polygons(), View())
    with pytest.raises(ValueError, match="grid offset"):
        merge_view_outputs([out, out], (View(), View(0, True)), 4, grid_offset=1.5)
    merge_view_outputs([out], (View(),), 4, grid_offset=1.5)  # one view: nothing to align


def test_broken_inverse_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # view_back forgetting the flip: the flipped views' peaks land in mirrored cells.
    def no_flip_back(maps: torch.Tensor, view: View) -> torch.Tensor:
        return torch.rot90(maps, -view.quarter_turns, dims=(-2, -1))

    monkeypatch.setattr(tta_mod, "view_back", no_flip_back)
    polygons = _polygons()
    found = _merged_polygons((View(), View(0, True)), polygons)
    assert len(found) != len(polygons) or _best_ious(found, polygons).min() < 0.5


def test_averaging_two_views_averages_the_boxes() -> None:
    # Two views that disagree (one sees the ship 10 degrees further turned): the merged box lies
    # between them.
    base = torch.as_tensor(obb_to_poly(np.array([[60.3, 60.6, 40.0, 10.0, np.radians(30.0)]])),
                           dtype=torch.float32)
    turned = torch.as_tensor(obb_to_poly(np.array([[60.3, 60.6, 40.0, 10.0, np.radians(40.0)]])),
                             dtype=torch.float32)
    flip = View(0, True)
    merged = merge_view_outputs([_perfect_outputs(base, View()), _perfect_outputs(turned, flip)],
                                (View(), flip), 4)
    found, scores, _ = decode_topk(merged, 5, 0.5)
    box = found[0][0].reshape(4, 2)
    long_edge = box[1] - box[0] if (box[1] - box[0]).norm() > (box[2] - box[1]).norm() else box[2] - box[1]
    angle = float(np.degrees(np.arctan2(float(long_edge[1]), float(long_edge[0])))) % 180.0
    assert angle == pytest.approx(35.0, abs=0.5)


def test_identity_view_is_the_rectangle_decode() -> None:
    torch.manual_seed(0)
    out = {"hm": torch.randn(2, 1, 16, 16), "wh": torch.randn(2, 10, 16, 16) * 3,
           "reg": torch.rand(2, 2, 16, 16), "cls_theta": torch.randn(2, 1, 16, 16)}
    merged = merge_view_outputs([out], (View(),), 4)
    plain = decode_topk(out, 20, 0.5, rectangles=True)
    via = decode_topk(merged, 20, 0.5)
    assert torch.allclose(plain[0], via[0], atol=1e-3)
    assert torch.allclose(plain[1], via[1], atol=1e-5)


def test_covariance_rectangle_matches_gaussian_rectangle() -> None:
    torch.manual_seed(1)
    vectors = torch.randn(50, 4, 2) * 5
    centre = torch.randn(50, 2)
    mean, rect = gaussian_rectangle(centre, vectors)
    _, cov = tlrb_gaussian(centre, vectors)
    assert torch.allclose(covariance_rectangle(cov), rect)
    assert torch.allclose(tlrb_gaussian(mean, rect)[1], cov, atol=1e-4)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="tta must be one of"):
        views_for("mirror")
    with pytest.raises(ValueError, match="square"):
        apply_view(torch.zeros(1, 3, 8, 12), View(1, False))
    out = {"hm": torch.zeros(1, 1, 4, 4), "wh": torch.zeros(1, 10, 4, 4), "reg": torch.zeros(1, 2, 4, 4),
           "cls_theta": torch.zeros(1, 1, 4, 4)}
    with pytest.raises(ValueError, match="one output per view"):
        merge_view_outputs([out], views_for("flips"), 4)


# ----------------------------------------------------------------------------------- the predictor
def _blob_predictor(tta: str) -> Predictor:
    return fake_predictor(BlobModel(), tta=tta)


@pytest.mark.parametrize("mode", ["flips", "dihedral"])
def test_predictor_with_an_equivariant_model_gives_the_same_boxes(mode: str) -> None:
    # BlobModel finds white rectangles exactly, in any view: TTA must give back the plain boxes.
    # (Centres off the cell borders: a centre on one is a tie that each view breaks its own way.)
    boxes = [rect(6, 8, 30, 20), rect(40, 34, 52, 58), rect(10, 40, 23, 47)]
    image = white_rects_scene(60, 64, boxes)
    plain = _blob_predictor("none").predict_images([image])[0]
    augmented = _blob_predictor(mode).predict_images([image])[0]
    assert len(plain["scores"]) == len(augmented["scores"]) == len(boxes)
    assert match(augmented["polygons"].numpy(), np.stack(boxes)).max() < 1e-3
    torch.testing.assert_close(augmented["scores"], plain["scores"], atol=1e-5, rtol=0)


def test_predictor_runs_every_view_in_one_call_and_keeps_the_batch() -> None:
    model = BlobModel()
    calls: list[int] = []
    forward = model.forward

    def counting(x: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(x.shape[0])
        return forward(x)

    model.forward = counting  # type: ignore[method-assign]
    predictor = fake_predictor(model, tta="dihedral")
    images = torch.zeros(3, 3, 64, 64, dtype=torch.uint8)
    out = predictor.forward(images)
    assert calls == [24] and out["hm"].shape[0] == 3 and out["wh"].shape == (3, 10, 16, 16)
    with pytest.raises(ValueError, match="square inputs"):
        predictor.forward(torch.zeros(1, 3, 64, 48, dtype=torch.uint8))


def test_random_model_batched_tta_equals_one_image_at_a_time() -> None:
    base = tiny_predictor(batch_size=2)
    predictor = Predictor(base.model, base.cfg, base.classes, device="cpu", batch_size=2, score_thresh=0.1,
                          tta="flips")
    images = [texture(64, 64, 1), texture(40, 100, 2), texture(90, 30, 3)]
    batched = predictor.predict_images(images)
    assert sum(len(d["scores"]) for d in batched) > 5
    for image, b in zip(images, batched):
        single = predictor.predict_images([image])[0]
        torch.testing.assert_close(single["scores"], b["scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(single["polygons"], b["polygons"], atol=1e-3, rtol=0)


def test_predictor_rejects_unknown_modes_and_the_aligned_grid() -> None:
    with pytest.raises(ValueError, match="tta must be one of"):
        _blob_predictor("mirror")
    model = BlobModel()
    model.grid_offset = 1.5  # type: ignore[assignment]
    with pytest.raises(ValueError, match="original output grid"):
        fake_predictor(model, tta="flips")
    fake_predictor(model)  # without test-time augmentation any grid decodes
