"""Target encoding: the Gaussian radius against a brute-force solve, the batched encoder against a
slow per-object reference, the cls_theta rule, ignore regions, and one regression test per flaw
of the original's ground truth (docs/design.md "Known flaws" items 2-4)."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np
import pytest
import shapely
import torch

import bbavectors.targets as targets_mod
from bbavectors.config import TargetConfig
from bbavectors.roundtrip import horizontal_band_halfwidth, ideal_outputs, roundtrip_polygons
from bbavectors.targets import encode_targets, gaussian_radius
from DOTA_devkit.geometry import obb_to_poly, obb_to_tlrb, poly_iou, poly_to_hbb, poly_to_obb

RNG_SEED = 1234


# ----------------------------------------------------------------------------------------------
# Slow, obviously-correct references
# ----------------------------------------------------------------------------------------------
def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of axis-aligned boxes (..., 4) xyxy."""
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _three_case_ious(w: float, h: float, r: np.ndarray) -> np.ndarray:
    """IoU of a w x h box with its copy moved by r at the corners, CornerNet's three ways: (3, R)."""
    gt = np.array([0.0, 0.0, w, h])
    z = np.zeros_like(r)
    shifted = np.stack([r, r, w + r, h + r], axis=-1)
    shrunk = np.stack([r, r, w - r, h - r], axis=-1)
    grown = np.stack([-r, -r, w + r, h + r], axis=-1)
    shrunk = np.where((w - 2 * r > 0)[:, None] & (h - 2 * r > 0)[:, None], shrunk, np.stack([z, z, z, z], -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.stack([_box_iou(gt, shifted), _box_iou(gt, shrunk), _box_iou(gt, grown)])
    return np.nan_to_num(out)


def _brute_radius(w: float, h: float, overlap: float, steps: int = 200_001) -> tuple[float, float]:
    """Largest r on a fine grid keeping all three IoUs >= overlap; returns (r, grid step)."""
    r = np.linspace(0.0, max(w, h), steps)
    ok = (_three_case_ious(w, h, r) >= overlap).all(axis=0)
    bad = np.nonzero(~ok)[0]
    last = (bad[0] - 1) if len(bad) else steps - 1
    return float(r[last]), float(r[1] - r[0])


def _bisect_radius(w: float, h: float, overlap: float) -> float:
    lo, hi = 0.0, max(w, h)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if (_three_case_ious(w, h, np.array([mid])) >= overlap).all():
            lo = mid
        else:
            hi = mid
    return lo


def reference_encode(polys, classes, difficult, num_classes, input_hw, cfg, down_ratio=4):
    """One object at a time, numpy, straight from the rules in bbavectors.targets' docstring."""
    batch = len(polys)
    h, w = math.ceil(input_hw[0] / down_ratio), math.ceil(input_hw[1] / down_ratio)
    k_slots = cfg.max_objects
    hm = np.zeros((batch, num_classes, h, w))
    ignore = np.zeros((batch, 1, h, w), dtype=bool)
    ind = np.zeros((batch, k_slots), np.int64)
    mask = np.zeros((batch, k_slots), bool)
    reg = np.zeros((batch, k_slots, 2))
    wh = np.zeros((batch, k_slots, 10))
    cls_theta = np.zeros((batch, k_slots, 1))
    dropped = np.zeros(batch, np.int64)
    ignored = np.zeros(batch, np.int64)
    eps = np.finfo(np.float32).eps
    for b in range(batch):
        used = 0
        for poly, cls, diff in zip(polys[b], classes[b], difficult[b]):
            obb = poly_to_obb(poly[None])[0]
            cx, cy, bw, bh, _ = obb
            ix, iy = math.floor(cx / down_ratio), math.floor(cy / down_ratio)
            inside = 0 <= ix < w and 0 <= iy < h
            positive = inside and bh + 1e-4 >= cfg.min_size and bh > 0 and not (diff and cfg.ignore_difficult)
            r = math.floor(_bisect_radius(bw / down_ratio, bh / down_ratio, cfg.gaussian_overlap))
            sigma = (2 * r + 1) / 6
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    x, y = ix + dx, iy + dy
                    if not (0 <= x < w and 0 <= y < h):
                        continue
                    if positive:
                        g = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
                        hm[b, cls, y, x] = max(hm[b, cls, y, x], g if g >= eps else 0.0)
                    else:
                        ignore[b, 0, y, x] = True
            if not positive:
                # Also every cell whose centre lies in the box (output scale), by shapely.
                yy, xx = np.mgrid[0:h, 0:w]
                centres = shapely.points(((xx + 0.5) * down_ratio).ravel(), ((yy + 0.5) * down_ratio).ravel())
                rect = shapely.polygons(obb_to_poly(obb[None]).reshape(4, 2))
                ignore[b, 0] |= shapely.covers(rect, centres).reshape(h, w)
                ignored[b] += 1
                continue
            if used >= k_slots:
                dropped[b] += 1
                continue
            ind[b, used] = iy * w + ix
            mask[b, used] = True
            reg[b, used] = (cx / down_ratio - ix, cy / down_ratio - iy)
            hbb = poly_to_hbb(obb_to_poly(obb[None]))[0]
            wh[b, used, :8] = obb_to_tlrb(obb[None])[0].reshape(-1) / down_ratio
            wh[b, used, 8:] = (hbb[2] - hbb[0]) / down_ratio, (hbb[3] - hbb[1]) / down_ratio
            # The horizontal IoU by polygon clipping (shapely), not by the analytic formula.
            rect = obb_to_poly(obb[None])
            ext = np.array([[hbb[0], hbb[1], hbb[2], hbb[1], hbb[2], hbb[3], hbb[0], hbb[3]]])
            cls_theta[b, used, 0] = float(poly_iou(rect, ext)[0] < cfg.horizontal_iou)
            used += 1
    ignore &= ~(hm.max(axis=1, keepdims=True) >= 1.0)
    return {"hm": hm, "hm_ignore": ignore, "ind": ind, "mask": mask, "reg": reg, "wh": wh,
            "cls_theta": cls_theta, "num_dropped": dropped, "num_ignored": ignored}


def _random_batch(rng: np.random.Generator, counts: list[int], size: int, num_classes: int):
    polys, classes, difficult = [], [], []
    for n in counts:
        long_side = rng.uniform(1, 90, n)
        short_side = long_side / rng.uniform(1, 8, n)
        # Some centres beyond the canvas: they must become ignore regions.
        cx, cy = rng.uniform(-10, size + 10, n), rng.uniform(-10, size + 10, n)
        obb = np.stack([cx, cy, long_side, short_side, rng.uniform(0, np.pi, n)], axis=1)
        polys.append(obb_to_poly(obb))
        classes.append(rng.integers(0, num_classes, n))
        difficult.append((rng.uniform(size=n) < 0.15).astype(np.int64) * rng.integers(1, 3, n))
    return polys, classes, difficult


def _encode_np(polys, classes, difficult, num_classes, input_hw, cfg, dtype=torch.float32):
    return encode_targets(
        [torch.as_tensor(p, dtype=dtype) for p in polys],
        [torch.as_tensor(c) for c in classes],
        [torch.as_tensor(d) for d in difficult],
        num_classes, input_hw, cfg,
    )


def _one(poly, cls=0, diff=0, num_classes=1, input_hw=(128, 128), cfg=None):
    cfg = cfg or TargetConfig()
    p = torch.as_tensor(np.asarray(poly, dtype=np.float64).reshape(-1, 8))
    n = p.shape[0]
    return encode_targets([p], [torch.full((n,), cls)], [torch.full((n,), diff)], num_classes, input_hw, cfg)


# ----------------------------------------------------------------------------------------------
# Gaussian radius
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlap", [0.3, 0.5, 0.7, 0.9])
def test_gaussian_radius_matches_brute_force(overlap: float) -> None:
    rng = np.random.default_rng(RNG_SEED)
    sizes = [(1.0, 1.0), (2.0, 0.5), (10.0, 10.0), (40.0, 3.0), (100.0, 25.0), (150.0, 150.0)]
    sizes += [tuple(rng.uniform(0.5, 120, 2)) for _ in range(6)]
    w = torch.tensor([s[0] for s in sizes], dtype=torch.float64)
    h = torch.tensor([s[1] for s in sizes], dtype=torch.float64)
    fast = gaussian_radius(w, h, overlap)
    for i, (bw, bh) in enumerate(sizes):
        brute, step = _brute_radius(bw, bh, overlap)
        assert abs(float(fast[i]) - brute) <= step, (bw, bh, overlap, float(fast[i]), brute)


def test_gaussian_radius_hand_values_and_degenerate() -> None:
    # Square 10 x 10, overlap 0.7: case 2 binds, 4r^2 - 40r + 30 = 0 -> r = (40 - sqrt(1120)) / 8.
    ten = torch.tensor([10.0], dtype=torch.float64)
    r = gaussian_radius(ten, ten, 0.7)
    assert float(r[0]) == pytest.approx((40 - math.sqrt(1120)) / 8, rel=1e-12)
    zero = gaussian_radius(torch.zeros(2), torch.tensor([0.0, 5.0]), 0.7)
    assert torch.isfinite(zero).all() and (zero == 0).all()
    with pytest.raises(ValueError, match="overlap"):
        gaussian_radius(torch.ones(1), torch.ones(1), 1.0)


def test_regression_cornernet_radius_roots() -> None:
    """CornerNet/CenterNet (and the original) divide roots 2 and 3 by 2 instead of 2a: their radius is
    too large, so a box displaced by it falls below the overlap; ours keeps every case at the overlap."""
    w, h, o = 30.0, 12.0, 0.7
    b1, c1 = h + w, w * h * (1 - o) / (1 + o)
    b2, c2 = 2 * (h + w), (1 - o) * w * h
    a3, b3, c3 = 4 * o, -2 * o * (h + w), (o - 1) * w * h
    shipped = min((b1 + math.sqrt(b1**2 - 4 * c1)) / 2, (b2 + math.sqrt(b2**2 - 16 * c2)) / 2,
                  (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2)
    ours = float(gaussian_radius(torch.tensor([w]).double(), torch.tensor([h]).double(), o)[0])
    assert _three_case_ious(w, h, np.array([shipped])).min() < o - 0.05
    assert _three_case_ious(w, h, np.array([ours])).min() == pytest.approx(o, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# Fast vs slow
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("input_hw", [(96, 96), (90, 130)])
def test_encoder_matches_slow_reference(input_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(RNG_SEED)
    num_classes = 4
    cfg = replace(TargetConfig(), max_objects=12)
    polys, classes, difficult = _random_batch(rng, [40, 0, 9, 1], max(input_hw), num_classes)
    fast = _encode_np(polys, classes, difficult, num_classes, input_hw, cfg, dtype=torch.float64)
    slow = reference_encode(polys, classes, difficult, num_classes, input_hw, cfg)
    assert slow["mask"].sum() > 10 and slow["hm_ignore"].any() and slow["num_dropped"].sum() > 0
    np.testing.assert_allclose(fast["hm"].numpy(), slow["hm"], atol=1e-6)
    for key in ("hm_ignore", "ind", "mask", "cls_theta", "num_dropped", "num_ignored"):
        np.testing.assert_array_equal(fast[key].numpy(), slow[key], err_msg=key)
    np.testing.assert_allclose(fast["reg"].numpy(), slow["reg"], atol=1e-5)
    np.testing.assert_allclose(fast["wh"].numpy(), slow["wh"], atol=1e-4)


def test_output_shapes_dtypes_and_device() -> None:
    rng = np.random.default_rng(0)
    polys, classes, difficult = _random_batch(rng, [3, 5], 64, 2)
    out = _encode_np(polys, classes, difficult, 2, (64, 70), replace(TargetConfig(), max_objects=7))
    shapes = {"hm": (2, 2, 16, 18), "hm_ignore": (2, 1, 16, 18), "ind": (2, 7), "mask": (2, 7),
              "reg": (2, 7, 2), "wh": (2, 7, 10), "cls_theta": (2, 7, 1), "num_dropped": (2,),
              "num_ignored": (2,)}
    dtypes = {"hm": torch.float32, "hm_ignore": torch.bool, "ind": torch.long, "mask": torch.bool,
              "reg": torch.float32, "wh": torch.float32, "cls_theta": torch.float32,
              "num_dropped": torch.long, "num_ignored": torch.long}
    for key, shape in shapes.items():
        assert tuple(out[key].shape) == shape, key
        assert out[key].dtype == dtypes[key], key
        assert out[key].device == torch.device("cpu")


def test_chunked_rendering_equals_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    polys, classes, difficult = _random_batch(rng, [20, 20], 200, 3)
    polys[0][0] = obb_to_poly(np.array([[100, 100, 190, 150, 0.3]]))[0]  # one huge window
    one = _encode_np(polys, classes, difficult, 3, (200, 200), TargetConfig())
    monkeypatch.setattr(targets_mod, "RENDER_BUDGET", 300)
    many = _encode_np(polys, classes, difficult, 3, (200, 200), TargetConfig())
    for key in one:
        assert torch.equal(one[key], many[key]), key


def test_empty_batch_images_give_empty_targets() -> None:
    out = encode_targets([torch.zeros(0, 8)] * 2, [torch.zeros(0, dtype=torch.long)] * 2,
                         [torch.zeros(0, dtype=torch.long)] * 2, 3, (64, 64), TargetConfig())
    assert out["hm"].abs().sum() == 0 and not out["hm_ignore"].any() and not out["mask"].any()


# ----------------------------------------------------------------------------------------------
# Hand-derived encodings
# ----------------------------------------------------------------------------------------------
def test_hand_derived_rotated_box() -> None:
    # DOTA_devkit.geometry's worked example: 40 x 20 at (100, 50), 30 degrees clockwise on screen.
    poly = obb_to_poly(np.array([[101.0, 50.6, 40, 20, np.pi / 6]]))
    out = _one(poly, input_hw=(128, 160))
    assert out["mask"][0, 0] and out["mask"].sum() == 1
    assert int(out["ind"][0, 0]) == 12 * 40 + 25
    np.testing.assert_allclose(out["reg"][0, 0].numpy(), [0.25, 0.65], atol=1e-6)
    t, r, b, l = (5, -8.660254), (17.320508, 10), (-5, 8.660254), (-17.320508, -10)
    ext_w, ext_h = 40 * math.cos(math.pi / 6) + 20 * 0.5, 40 * 0.5 + 20 * math.cos(math.pi / 6)
    expected = np.array([*t, *r, *b, *l, ext_w, ext_h]) / 4
    np.testing.assert_allclose(out["wh"][0, 0].numpy(), expected, atol=1e-5)
    assert out["cls_theta"][0, 0, 0] == 1.0
    assert out["hm"][0, 0, 12, 25] == 1.0 and int((out["hm"] == 1.0).sum()) == 1


def test_axis_aligned_box_is_horizontal_with_t_up() -> None:
    out = _one([[10, 20, 50, 20, 50, 40, 10, 40]])
    np.testing.assert_allclose(out["wh"][0, 0].numpy(), [0, -2.5, 5, 0, 0, 2.5, -5, 0, 10, 5], atol=1e-6)
    assert out["cls_theta"][0, 0, 0] == 0.0


def test_cls_theta_switches_exactly_at_the_band_edge() -> None:
    cfg = TargetConfig()
    for aspect in (1.0, 2.0, 4.0, 8.0):
        edge = math.radians(horizontal_band_halfwidth(cfg.horizontal_iou, aspect))
        for tilt, expected in ((edge * 0.999, 0.0), (edge * 1.001, 1.0)):
            for base in (0.0, math.pi / 2, math.pi):
                for sign in (1, -1):
                    ang = (base + sign * tilt) % math.pi
                    out = _one(obb_to_poly(np.array([[64, 64, 80, 80 / aspect, ang]])), cfg=cfg)
                    assert out["cls_theta"][0, 0, 0] == expected, (aspect, tilt, base, sign)


def test_regression_cls_theta_is_analytic_not_raster() -> None:
    """The original rasterised each box (cv2.fillPoly) to get its IoU with its external box; ours is
    the exact area ratio: it agrees with exact polygon clipping (shapely) for every random box."""
    rng = np.random.default_rng(7)
    n = 300
    obb = np.stack([rng.uniform(20, 100, n), rng.uniform(20, 100, n), rng.uniform(4, 40, n),
                    rng.uniform(2, 4, n), rng.uniform(0, np.pi, n)], axis=1)
    obb[:, 4][:100] = rng.normal(0, 0.01, 100) % np.pi  # many near the band
    rect = obb_to_poly(obb)
    hbb = poly_to_hbb(rect)
    ext_area = (hbb[:, 2] - hbb[:, 0]) * (hbb[:, 3] - hbb[:, 1])
    clipped = shapely.area(shapely.polygons(rect.reshape(-1, 4, 2))) / ext_area
    cfg = replace(TargetConfig(), max_objects=n)
    out = encode_targets([torch.from_numpy(rect)], [torch.zeros(n, dtype=torch.long)],
                         [torch.zeros(n, dtype=torch.long)], 1, (128, 128), cfg)
    assert int(out["mask"].sum()) == n
    expected = (clipped < cfg.horizontal_iou).astype(np.float32)
    np.testing.assert_array_equal(out["cls_theta"][0, :, 0].numpy(), expected)
    assert 0 < (clipped >= cfg.horizontal_iou).sum() < n


def _bearing(v: np.ndarray) -> np.ndarray:
    return np.degrees(np.mod(np.arctan2(v[..., 0], -v[..., 1]), 2 * np.pi))


def test_regression_vectors_independent_of_corner_order_and_opencv_convention() -> None:
    """The original took vectors from cv2.boxPoints and reordered them only when the OpenCV angle was
    exactly -90/0 (a float equality on a convention that changed in OpenCV 4.5.1). Ours depend on the
    box alone: any corner order / direction gives the same targets, and t, r, b, l always lie in their
    screen quadrants [0, 90), [90, 180), [180, 270), [270, 360) degrees of bearing."""
    rng = np.random.default_rng(3)
    angles = np.concatenate([rng.uniform(0, np.pi, 40), np.radians([0, 30, 45, 60, 90, 120, 135, 179.9])])
    for ang in angles:
        rect = obb_to_poly(np.array([[60.3, 61.7, 50, 20, ang]]))[0].reshape(4, 2)
        variants = [np.roll(rect, k, axis=0) for k in range(4)]
        variants += [np.roll(rect[::-1], k, axis=0) for k in range(4)]
        outs = [_one(v.reshape(1, 8)) for v in variants]
        for o in outs[1:]:
            np.testing.assert_allclose(o["wh"][0, 0].numpy(), outs[0]["wh"][0, 0].numpy(), atol=1e-6)
        vec = outs[0]["wh"][0, 0, :8].numpy().reshape(4, 2).astype(np.float64)
        bearings = _bearing(vec)
        for q, bearing in enumerate(bearings):
            # A float32 vector on an axis can read 359.99999 for 0: compare on the circle.
            lo = 90 * q
            in_quadrant = (bearing - lo) % 360 < 90 + 1e-3 or (lo - bearing) % 360 < 1e-3
            assert in_quadrant, (np.degrees(ang), q, bearings)


@pytest.mark.parametrize("base_deg", [0.0, 45.0, 90.0, 135.0])
def test_quadrant_boundaries_finite_and_deterministic(base_deg: float) -> None:
    offsets = [0.0, 1e-9, -1e-9, 1e-6, -1e-6, 1e-3, -1e-3, 0.5, -0.5]
    for aspect in (1.0, 1.0001, 3.0):
        obb = np.array([[64.1, 63.9, 30, 30 / aspect, math.radians(base_deg + d) % math.pi] for d in offsets])
        poly = obb_to_poly(obb)
        first = _one(poly, cfg=replace(TargetConfig(), max_objects=len(offsets)))
        again = _one(poly, cfg=replace(TargetConfig(), max_objects=len(offsets)))
        for key in first:
            assert torch.equal(first[key], again[key]), key
            if first[key].is_floating_point():
                assert torch.isfinite(first[key]).all(), key
        # Whatever the quadrant labelling chose, the vectors rebuild the box.
        wh = first["wh"][0, : len(offsets)].double().numpy()
        vec = wh[:, :8].reshape(-1, 4, 2) * 4
        t, r, b, l = vec[:, 0], vec[:, 1], vec[:, 2], vec[:, 3]
        corners = np.stack([t + l, t + r, b + r, b + l], axis=1) + obb[:, None, :2]
        np.testing.assert_allclose(poly_iou(corners.reshape(-1, 8), poly), 1.0, atol=1e-5)


def test_one_pixel_and_zero_size_boxes() -> None:
    one_px = [[10, 10, 11, 10, 11, 11, 10, 11]]
    kept = _one(one_px, cfg=replace(TargetConfig(), min_size=0.5))
    assert kept["mask"].sum() == 1 and kept["hm"][0, 0, 2, 2] == 1.0
    expected = [0, -0.125, 0.125, 0, 0, 0.125, -0.125, 0, 0.25, 0.25]
    np.testing.assert_allclose(kept["wh"][0, 0].numpy(), expected)
    ignored = _one(one_px, cfg=replace(TargetConfig(), min_size=2.0))  # too small: ignored, not a negative
    assert ignored["mask"].sum() == 0 and ignored["hm_ignore"][0, 0, 2, 2] and ignored["num_ignored"][0] == 1
    point = _one([[10, 10] * 4], cfg=replace(TargetConfig(), min_size=0.0))
    assert point["mask"].sum() == 0 and point["hm_ignore"][0, 0, 2, 2]
    for out in (kept, ignored, point):
        for v in out.values():
            if v.is_floating_point():
                assert torch.isfinite(v).all()


# ----------------------------------------------------------------------------------------------
# Ignore regions, caps, bad input (the original's flaws)
# ----------------------------------------------------------------------------------------------
def test_regression_small_objects_are_positives() -> None:
    """The original dropped objects of 10 px and less (they silently became negatives)."""
    boxes = [[20, 20, 26, 20, 26, 26, 20, 26], [60, 60, 63, 60, 63, 62.5, 60, 62.5]]  # 6x6, 3x2.5 px
    out = _one(boxes, cfg=replace(TargetConfig(), max_objects=4))
    assert int(out["mask"].sum()) == 2 and int((out["hm"] == 1.0).sum()) == 2
    assert not out["hm_ignore"].any()


def test_regression_objects_beyond_the_cap_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The original kept the first 500 objects per image and dropped the rest without a word."""
    xs, ys = np.meshgrid(np.arange(30) * 20 + 10, np.arange(20) * 20 + 10)
    obb = np.stack([xs.ravel(), ys.ravel(), np.full(600, 12.0), np.full(600, 6.0), np.full(600, 0.4)], axis=1)
    poly = obb_to_poly(obb)
    full = _one(poly, input_hw=(608, 608))  # default cap 1000: nothing dropped
    assert int(full["mask"].sum()) == 600 and int(full["num_dropped"][0]) == 0
    with caplog.at_level(logging.WARNING, logger="bbavectors.targets"):
        capped = _one(poly, input_hw=(608, 608), cfg=replace(TargetConfig(), max_objects=550))
    assert int(capped["mask"].sum()) == 550 and int(capped["num_dropped"][0]) == 50
    assert any("50 objects beyond max_objects=550" in r.getMessage() for r in caplog.records)
    # Dropped objects still are objects: their peaks stay in the heatmap.
    assert int((capped["hm"] == 1.0).sum()) == 600 and not capped["hm_ignore"].any()


def test_regression_difficult_objects_are_ignored_not_positives() -> None:
    """The original trained difficult objects as positives."""
    box = obb_to_poly(np.array([[50.0, 50.0, 80, 40, 0.7]]))  # radius 1 at stride 4
    hard = _one(box, diff=1)
    assert hard["mask"].sum() == 0 and hard["hm"].abs().sum() == 0
    assert hard["hm_ignore"][0, 0, 12, 12] and int(hard["hm_ignore"].sum()) > 1
    assert int(hard["num_ignored"][0]) == 1
    also = _one(box, diff=2)
    assert torch.equal(also["hm_ignore"], hard["hm_ignore"])
    trained = _one(box, diff=1, cfg=replace(TargetConfig(), ignore_difficult=False))
    assert trained["mask"].sum() == 1 and trained["hm"][0, 0, 12, 12] == 1.0
    assert not trained["hm_ignore"].any()
    # The ignore region covers where the positive Gaussian would have been, and the box.
    assert (hard["hm_ignore"][0, 0] | ~(trained["hm"][0, 0] > 0)).all()
    assert int(hard["hm_ignore"].sum()) > int((trained["hm"] > 0).sum())


def test_positive_peak_never_ignored_under_a_difficult_neighbour() -> None:
    boxes = obb_to_poly(np.array([[50.0, 50.0, 60, 30, 0.2], [54.0, 53.0, 60, 30, 1.0]]))
    out = encode_targets([torch.from_numpy(boxes)], [torch.tensor([0, 1])], [torch.tensor([0, 1])], 2,
                         (128, 128), TargetConfig())
    assert out["hm_ignore"][0, 0].sum() > 1
    assert not out["hm_ignore"][0, 0, 12, 12] and out["hm"][0, 0, 12, 12] == 1.0


def test_centre_outside_the_map_becomes_an_ignore_region() -> None:
    # x from -26 to 14 px, y from 33 to 49: cells whose centre is covered (edges included):
    # columns 0..3 (centres 2, 6, 10, 14 px), rows 8..11 (centres 34 .. 46 px).
    box = obb_to_poly(np.array([[-6.0, 41.0, 40, 16, 0.0]]))
    out = _one(box)
    assert out["mask"].sum() == 0 and out["hm"].abs().sum() == 0 and int(out["num_ignored"][0]) == 1
    ignored = out["hm_ignore"][0, 0]
    assert ignored[8:12, 0:4].all() and int(ignored.sum()) == 4 * 4


@pytest.mark.parametrize(
    ("polys", "classes", "message"),
    [
        ([np.zeros((1, 8))], [np.array([3])], "class 3"),
        ([np.zeros((1, 8))], [np.array([-1])], "class -1"),
        ([np.full((1, 8), np.nan)], [np.array([0])], "finite"),
        ([np.zeros((1, 6))], [np.array([0])], r"\(N, 8\)"),
        ([np.zeros((2, 8))], [np.array([0])], "2 polygons"),
    ],
)
def test_bad_inputs_raise_clear_errors(polys, classes, message) -> None:
    with pytest.raises(ValueError, match=message):
        encode_targets([torch.as_tensor(p) for p in polys], [torch.as_tensor(c) for c in classes],
                       [torch.zeros(len(c), dtype=torch.long) for c in classes], 3, (64, 64), TargetConfig())


def test_mismatched_lists_and_empty_batch_raise() -> None:
    with pytest.raises(ValueError, match="one of each per image"):
        encode_targets([torch.zeros(0, 8)], [], [], 1, (64, 64), TargetConfig())
    with pytest.raises(ValueError, match="empty batch"):
        encode_targets([], [], [], 1, (64, 64), TargetConfig())


def test_ideal_outputs_have_peaks_only_at_centres() -> None:
    rng = np.random.default_rng(11)
    polys, classes, difficult = _random_batch(rng, [25], 160, 2)
    difficult = [np.zeros_like(d) for d in difficult]
    out = _encode_np(polys, classes, difficult, 2, (160, 160), replace(TargetConfig(), min_size=4.0))
    logits = ideal_outputs(out)["hm"]
    peaks = (logits == torch.nn.functional.max_pool2d(logits, 3, 1, 1)) & (logits > 0)
    assert torch.equal(peaks, out["hm"] == 1.0)


# ----------------------------------------------------------------------------------------------
# targets.gaussian_shape = "box": an ellipse along the oriented box
# ----------------------------------------------------------------------------------------------
def _encode_one(obb: tuple[float, float, float, float, float], cfg: TargetConfig) -> dict[str, torch.Tensor]:
    return _one(obb_to_poly(np.array([obb], dtype=np.float64)), cfg=cfg)


def test_box_gaussian_hand_values_axis_aligned_thin_box() -> None:
    # 40 x 8 px along x, centre (64.5, 64.5) in cell (16, 16): sigmas 0.54 * (10, 2) / 6 = (0.9, 0.18).
    cfg = TargetConfig(gaussian_shape="box")
    hm = _encode_one((64.5, 64.5, 40.0, 8.0, 0.0), cfg)["hm"][0, 0]
    assert float(hm[16, 16]) == 1.0
    assert float(hm[16, 17]) == pytest.approx(math.exp(-1 / (2 * 0.9**2)), rel=1e-5)
    assert float(hm[16, 18]) == pytest.approx(math.exp(-4 / (2 * 0.9**2)), rel=1e-5)
    assert float(hm[17, 16]) == pytest.approx(math.exp(-1 / (2 * 0.18**2)), rel=1e-3)
    # CornerNet's radius for the same box is 0: a single-cell peak.
    round_hm = _encode_one((64.5, 64.5, 40.0, 8.0, 0.0), TargetConfig())["hm"][0, 0]
    assert float(round_hm.sum()) == 1.0


def test_box_gaussian_follows_the_box_angle() -> None:
    cfg = TargetConfig(gaussian_shape="box")
    # The same box turned a quarter (long side along y): the soft neighbours are above and below.
    hm = _encode_one((64.5, 64.5, 40.0, 8.0, math.pi / 2), cfg)["hm"][0, 0]
    assert float(hm[17, 16]) == pytest.approx(math.exp(-1 / (2 * 0.9**2)), rel=1e-5)
    assert float(hm[16, 17]) < 1e-5
    # At 45 degrees (y down: towards the lower right) the diagonal neighbour is sqrt(2) cells along it.
    hm45 = _encode_one((64.5, 64.5, 40.0, 8.0, math.pi / 4), cfg)["hm"][0, 0]
    assert float(hm45[17, 17]) == pytest.approx(math.exp(-2 / (2 * 0.9**2)), rel=1e-4)
    assert float(hm45[17, 15]) < 1e-5


def test_box_gaussian_round_trip_keeps_one_peak_per_object() -> None:
    rng = np.random.default_rng(3)
    n = 64
    obb = np.stack([np.zeros(n), np.zeros(n), rng.uniform(8, 40, n), rng.uniform(3, 8, n),
                    rng.uniform(0, math.pi, n)], axis=1)
    polys = obb_to_poly(obb)
    cfg = TargetConfig(gaussian_shape="box")
    decoded, encoded = roundtrip_polygons(polys, cfg, spacing=48.0)
    assert not np.isnan(decoded).any()
    assert poly_iou(decoded, encoded).min() > 0.95


def test_bad_gaussian_shape_is_rejected() -> None:
    from bbavectors.config import Config, ConfigError, validate_config

    cfg = Config()
    cfg.targets.gaussian_shape = "square"
    with pytest.raises(ConfigError, match="targets.gaussian_shape"):
        validate_config(cfg)
    cfg.targets.gaussian_shape = "box"
    cfg.targets.box_gaussian_scale = 0.0
    with pytest.raises(ConfigError, match="box_gaussian_scale"):
        validate_config(cfg)


# ----------------------------------------------------------------------------------------------
# targets.subcell_peaks: the Gaussian centred on the exact centre, the centre cell still 1
# ----------------------------------------------------------------------------------------------
def test_subcell_peaks_hand_values() -> None:
    # 40 x 12 px along x: 10 x 3 cells, CornerNet radius at overlap 0.1 floors to 1 (sigma 0.5).
    # Centre (66, 65) px = (16.5, 16.25) cells: centre cell (16, 16), whose centre is (16.5, 16.5),
    # so the Gaussian's own centre sits 0.25 cells above it.
    obb = (66.0, 65.0, 40.0, 12.0, 0.0)
    assert int(gaussian_radius(torch.tensor([10.0]), torch.tensor([3.0]), 0.1).floor()) == 1
    hm = _encode_one(obb, TargetConfig(gaussian_overlap=0.1, subcell_peaks=True))["hm"][0, 0]
    two_s2 = 2 * 0.5**2
    assert float(hm[16, 16]) == 1.0
    assert float(hm[15, 16]) == pytest.approx(math.exp(-(0.75**2) / two_s2), rel=1e-5)  # above: nearer
    assert float(hm[17, 16]) == pytest.approx(math.exp(-(1.25**2) / two_s2), rel=1e-5)  # below: farther
    assert float(hm[16, 17]) == pytest.approx(math.exp(-(1 + 0.25**2) / two_s2), rel=1e-5)
    assert float(hm[15, 17]) == pytest.approx(math.exp(-(1 + 0.75**2) / two_s2), rel=1e-5)
    assert int((hm == 1.0).sum()) == 1
    # Off (the default): the cell-centred Gaussian, the same above and below.
    plain = _encode_one(obb, TargetConfig(gaussian_overlap=0.1))["hm"][0, 0]
    assert float(plain[15, 16]) == float(plain[17, 16]) == pytest.approx(math.exp(-1 / two_s2), rel=1e-5)


def test_subcell_peaks_change_nothing_for_a_centred_object_or_radius_zero() -> None:
    centred = (66.0, 66.0, 40.0, 12.0, 0.0)  # exactly on its cell's centre
    on = _encode_one(centred, TargetConfig(gaussian_overlap=0.1, subcell_peaks=True))
    off = _encode_one(centred, TargetConfig(gaussian_overlap=0.1))
    torch.testing.assert_close(on["hm"], off["hm"], rtol=0, atol=1e-7)
    small = (65.0, 65.3, 10.0, 3.0, 0.0)  # radius 0 at overlap 0.7: a one-cell peak either way
    assert torch.equal(_encode_one(small, TargetConfig(subcell_peaks=True))["hm"],
                       _encode_one(small, TargetConfig())["hm"])


@pytest.mark.parametrize("shape", ["round", "box"])
def test_subcell_peaks_round_trip_keeps_one_peak_per_object(shape: str) -> None:
    rng = np.random.default_rng(5)
    n = 64
    obb = np.stack([np.zeros(n), np.zeros(n), rng.uniform(8, 60, n), rng.uniform(3, 20, n),
                    rng.uniform(0, math.pi, n)], axis=1)
    cfg = TargetConfig(gaussian_overlap=0.1, gaussian_shape=shape, subcell_peaks=True)
    decoded, encoded = roundtrip_polygons(obb_to_poly(obb), cfg, spacing=80.0)
    assert not np.isnan(decoded).any()
    assert poly_iou(decoded, encoded).min() > 0.95
