"""Augmentation: image and polygons move together; identity = letterbox; clipping rules; colour."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from bbavectors.config import AugmentConfig
from bbavectors.data.letterbox import letterbox_image
from bbavectors.data.transforms import (
    apply_color_matrix,
    augment_sample,
    clip_polygons,
    is_identity,
    letterbox_sample,
    sample_color_matrix,
    sample_geometry,
    warp_image,
)
from DOTA_devkit.geometry import obb_to_poly, poly_to_obb

SIZE = 256
IDENTITY = AugmentConfig(hflip=0, vflip=0, rot90=0, rotate=0, scale_min=1, scale_max=1,
                         color_jitter=0, channel_shuffle=0)


def only(**changes: float) -> AugmentConfig:
    return dataclasses.replace(IDENTITY, **changes)


def raster(poly: np.ndarray, size: int) -> np.ndarray:
    """Pixels whose centre (i + 0.5) lies inside the polygon (label pixel convention)."""
    mask = np.zeros((size, size), np.uint8)
    pts = np.round((np.asarray(poly, float).reshape(4, 2) - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def object_image(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """A grey-textured RGB image with one white object."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[raster(poly, max(h, w))[:h, :w]] = 255
    return img


def object_mask(image: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, m = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return m.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def rotated_box(cx: float, cy: float, w: float, h: float, deg: float) -> np.ndarray:
    return obb_to_poly(np.array([[cx, cy, w, h, np.radians(deg)]]))[0]


OBJECTS = [rotated_box(150, 120, 90, 40, 30), rotated_box(60, 200, 50, 30, 100),
           rotated_box(230, 60, 70, 70, 0)]

SINGLE_AUGMENTATIONS = {
    "hflip": only(hflip=1.0),
    "vflip": only(vflip=1.0),
    "rot90": only(rot90=1.0),
    "rotate": only(rotate=1.0, rotate_range=180.0),
    "scale_up": only(scale_min=1.3, scale_max=1.5),
    "scale_down": only(scale_min=0.6, scale_max=0.8),  # goes through the INTER_AREA pre-resize
    "color_jitter": only(color_jitter=0.3),
    "channel_shuffle": only(channel_shuffle=1.0),
}


def check_mask_covered(sample_image: np.ndarray, polys: np.ndarray, size: int) -> None:
    assert polys.shape == (1, 8)
    mask = object_mask(sample_image)
    poly_mask = raster(polys[0], size)
    cut = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
    if not cut:
        assert iou(mask, poly_mask) >= 0.9
    else:  # clipped: the polygon must still cover what is visible of the object
        assert (mask & poly_mask).sum() / mask.sum() >= 0.9


@pytest.mark.parametrize("name", sorted(SINGLE_AUGMENTATIONS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_augmentation_moves_image_and_polygon_together(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for poly in OBJECTS:
        img = object_image(poly, 300, 300)
        out = augment_sample(img, poly[None], np.zeros(1, np.int64), SIZE, SINGLE_AUGMENTATIONS[name], rng)
        assert out.image.shape == (SIZE, SIZE, 3) and out.image.dtype == np.uint8
        assert out.keep.tolist() == [0]
        check_mask_covered(out.image, out.polygons, SIZE)


@pytest.mark.parametrize("seed", range(6))
def test_random_compositions_move_image_and_polygon_together(seed: int) -> None:
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, rot90=0.5, rotate=0.7, rotate_range=180, scale_min=0.5,
                        scale_max=1.6, color_jitter=0.3)
    rng = np.random.default_rng(100 + seed)
    kept = 0
    for poly in OBJECTS:
        img = object_image(poly, 280, 320)  # not square: the pad region moves too
        out = augment_sample(img, poly[None], np.zeros(1, np.int64), SIZE, cfg, rng)
        if out.keep.size == 0:  # cropped away entirely
            assert object_mask(out.image).sum() < 20 or out.image.max() < 255
            continue
        kept += 1
        check_mask_covered(out.image, out.polygons, SIZE)
    assert kept >= 1


def test_identity_config_gives_exactly_the_letterbox() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    polys = np.stack([rotated_box(250, 150, 80, 30, 20), rotated_box(100, 100, 40, 20, 95)])
    diff = np.array([0, 2])
    assert is_identity(IDENTITY)
    out = augment_sample(img, polys, diff, SIZE, IDENTITY, rng)
    canvas, params = letterbox_image(img, SIZE)
    np.testing.assert_array_equal(out.image, canvas)
    np.testing.assert_allclose(out.polygons, polys * params.scale, atol=1e-9)
    assert out.keep.tolist() == [0, 1] and out.difficult.tolist() == [0, 2]
    assert out.letterbox == params


def test_letterbox_inverse_maps_polygons_back() -> None:
    img = np.zeros((333, 517, 3), np.uint8)
    polys = np.stack([rotated_box(250, 150, 80, 30, 20), rotated_box(500.5, 320.25, 30, 20, 170)])
    canvas, net, params = letterbox_sample(img, polys, 608)
    assert canvas.shape == (608, 608, 3)
    assert params.scale == pytest.approx(608 / 517)
    assert np.abs(params.invert(net) - polys).max() < 1e-3


def test_hflip_is_an_exact_pixel_mirror() -> None:
    # Regression for the half-pixel convention: a flip must map pixel i to W - 1 - i exactly.
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    poly = np.array([10.0, 20.0, 60.0, 20.0, 60.0, 50.0, 10.0, 50.0])
    out = augment_sample(img, poly[None], np.zeros(1, np.int64), SIZE, only(hflip=1.0), rng)
    np.testing.assert_array_equal(out.image, img[:, ::-1])
    assert sorted(out.polygons[0, 0::2].tolist()) == [SIZE - 60.0, SIZE - 60.0, SIZE - 10.0, SIZE - 10.0]
    np.testing.assert_allclose(sorted(out.polygons[0, 1::2].tolist()), [20.0, 20.0, 50.0, 50.0])


def test_rot90_is_an_exact_pixel_rotation() -> None:
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    seen = set()
    for _ in range(12):
        out = augment_sample(img, np.zeros((0, 8)), np.zeros(0, np.int64), SIZE, only(rot90=1.0), rng)
        matches = [k for k in (1, 2, 3) if np.array_equal(out.image, np.rot90(img, k))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {1, 2, 3}


def test_warp_preresize_matches_area_resize() -> None:
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
    half = np.diag([0.5, 0.5, 1.0])
    out = warp_image(img, half, 256)
    np.testing.assert_array_equal(out[:200, :200], cv2.resize(img, (200, 200), interpolation=cv2.INTER_AREA))
    assert out[200:].max() == 0 and out[:, 200:].max() == 0


def test_sample_geometry_places_content_inside_canvas() -> None:
    rng = np.random.default_rng(6)
    cfg = AugmentConfig(rotate=1.0, scale_min=0.5, scale_max=0.5)
    for _ in range(20):
        m = sample_geometry(rng, cfg, 200.0, 100.0, SIZE)
        corners = (m[:2, :2] @ np.array([[0, 200, 200, 0], [0, 0, 100, 100]]) + m[:2, 2:]).T
        # Content smaller than the canvas: padded, so it lies wholly inside.
        assert corners.min() >= -1e-9 and corners.max() <= SIZE + 1e-9


def corner_set(poly: np.ndarray) -> set[tuple[float, float]]:
    return {(round(float(x), 6) + 0.0, round(float(y), 6) + 0.0) for x, y in poly.reshape(4, 2)}


def test_big_turned_content_is_never_cropped_to_an_empty_corner() -> None:
    # At scale 2 and 45 degrees the bounding box's empty corners are larger than the canvas:
    # a uniform crop could show nothing (and the visible region would be empty).
    rng = np.random.default_rng(8)
    cfg = only(rotate=1.0, rotate_range=45.0, scale_min=2.0, scale_max=2.0)
    img = np.full((SIZE, SIZE, 3), 200, np.uint8)
    for _ in range(60):
        out = augment_sample(img, np.zeros((0, 8)), np.zeros(0, np.int64), SIZE, cfg, rng)
        assert (out.image.max(axis=2) > 0).mean() >= 0.5


def test_clip_polygons_hand_derived() -> None:
    canvas = np.array([[0, 0], [8, 0], [8, 8], [0, 8]], float)
    polys = np.array([
        [1, 1, 3, 1, 3, 3, 1, 3],  # inside: unchanged
        [4, 0, 12, 0, 12, 4, 4, 4],  # half visible (16 / 32): kept, not flagged, becomes [4, 8] x [0, 4]
        [6, 0, 14, 0, 14, 4, 6, 4],  # a quarter visible: flagged
        [9, 9, 12, 9, 12, 12, 9, 12],  # outside: removed
        [7.9, 1, 20, 1, 20, 6, 7.9, 6],  # 0.5 px^2 visible: removed
    ], float)
    out, keep, cut = clip_polygons(polys, canvas)
    assert keep.tolist() == [0, 1, 2]
    assert cut.tolist() == [False, False, True]
    np.testing.assert_array_equal(out[0], polys[0])
    assert corner_set(out[1]) == {(4.0, 0.0), (8.0, 0.0), (8.0, 4.0), (4.0, 4.0)}
    np.testing.assert_allclose(poly_to_obb(out[2:3])[0], [7, 2, 4, 2, np.pi / 2], atol=1e-9)


def test_mostly_cut_objects_become_difficult_and_others_keep_flags() -> None:
    rng = np.random.default_rng(0)
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    polys = np.array([[240, 10, 290, 10, 290, 30, 240, 30],   # 16 of 50 px inside
                      [10, 10, 40, 10, 40, 30, 10, 30],       # inside, was difficult 2
                      [400, 400, 420, 400, 420, 420, 400, 420]], float)
    out = augment_sample(img, polys, np.array([0, 2, 0]), SIZE, only(hflip=1.0), rng)
    assert out.keep.tolist() == [0, 1]
    assert out.difficult.tolist() == [1, 2]
    np.testing.assert_allclose(poly_to_obb(out.polygons[:1])[0], [8, 20, 20, 16, np.pi / 2], atol=1e-9)


def color_reference(img: np.ndarray, rng: np.random.Generator, j: float) -> np.ndarray:
    """Slow, step-by-step brightness, contrast, saturation on floats (same random draws)."""
    b, c, s = (max(0.0, rng.uniform(1 - j, 1 + j)) for _ in range(3))
    luma = np.array([0.299, 0.587, 0.114])
    x = img.astype(np.float64) * b
    mean = float((x @ luma).mean())
    x = (x - mean) * c + mean
    gray = (x @ luma)[..., None]
    x = gray + (x - gray) * s
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def test_color_matrix_matches_step_by_step_reference() -> None:
    img = np.random.default_rng(9).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    luma = float((img.reshape(-1, 3).astype(np.float64) @ np.array([0.299, 0.587, 0.114])).mean())
    cfg = only(color_jitter=0.4)
    for seed in range(5):
        m = sample_color_matrix(np.random.default_rng(seed), cfg, luma)
        assert m is not None and m.shape == (3, 4)
        fast = apply_color_matrix(img, m)
        slow = color_reference(img, np.random.default_rng(seed), 0.4)
        assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1


def test_color_matrix_ignores_mean_luma_without_jitter() -> None:
    # augment_sample skips computing the mean luma when color_jitter is 0: a channel shuffle alone
    # must then give the same matrix whatever the pivot.
    cfg = only(channel_shuffle=1.0)
    for seed in range(5):
        a = sample_color_matrix(np.random.default_rng(seed), cfg, 0.0)
        b = sample_color_matrix(np.random.default_rng(seed), cfg, 173.0)
        assert a is not None and b is not None
        np.testing.assert_array_equal(a, b)
    assert sample_color_matrix(np.random.default_rng(0), only(), 173.0) is None


def test_color_matrix_hand_derived_saturation_zero_gives_gray() -> None:
    lin = np.full((3, 3), 0.0) + np.array([0.299, 0.587, 0.114])[None]
    m = np.concatenate([lin, np.zeros((3, 1))], axis=1)
    img = np.array([[[200, 100, 50]]], np.uint8)
    assert apply_color_matrix(img, m)[0, 0].tolist() == [124, 124, 124]  # 59.8 + 58.7 + 5.7 = 124.2


def test_no_channel_permutation_by_default() -> None:
    # The original permuted channels at random; colour identifies classes here, so that is off.
    cfg = AugmentConfig()
    assert cfg.channel_shuffle == 0.0
    img = np.zeros((64, 64, 3), np.uint8)
    img[..., 0] = 200
    img[..., 1] = 40
    img[..., 2] = 40
    rng = np.random.default_rng(0)
    for _ in range(30):
        out = augment_sample(img, np.zeros((0, 8)), np.zeros(0, np.int64), 64, cfg, rng)
        content = out.image[out.image.max(axis=2) > 0]
        assert (content[:, 0] > content[:, 1]).all() and (content[:, 0] > content[:, 2]).all()


def test_bad_config_is_rejected_clearly() -> None:
    rng = np.random.default_rng(0)
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="scale_min"):
        augment_sample(img, np.zeros((0, 8)), np.zeros(0, np.int64), 32,
                       only(scale_min=1.5, scale_max=1.0), rng)
    with pytest.raises(ValueError, match="hflip"):
        augment_sample(img, np.zeros((0, 8)), np.zeros(0, np.int64), 32, only(hflip=2.0), rng)
    with pytest.raises(ValueError, match="difficult"):
        augment_sample(img, np.zeros((2, 8)), np.zeros(1, np.int64), 32, only(hflip=1.0), rng)


@pytest.mark.parametrize("seed", range(4))
def test_crop_is_a_window_of_the_letterbox_at_the_same_scale(seed: int) -> None:
    """crop_size alone: the output is a crop_size window of the letterboxed image, pixels and
    polygons shifted by the same integer-free translation, objects at their evaluation scale."""
    rng = np.random.default_rng(seed)
    img = rng.integers(1, 256, (300, 500, 3), dtype=np.uint8)
    poly = rotated_box(250, 150, 40, 20, 30)
    crop = 128
    out = augment_sample(img, poly[None], np.zeros(1, np.int64), SIZE, only(crop_size=crop), rng)
    canvas, params = letterbox_image(img, SIZE)
    assert out.image.shape == (crop, crop, 3)
    assert out.letterbox == params
    # Find the window: the translation is uniform, so look the crop up in the letterboxed canvas.
    match = cv2.matchTemplate(canvas.astype(np.float32), out.image.astype(np.float32), cv2.TM_SQDIFF)
    y, x = np.unravel_index(int(np.argmin(match)), match.shape)
    # The sub-pixel part of the shift resamples the pixels; the offset is recovered to within 1 px.
    if out.keep.size:
        shifted = out.polygons[0].reshape(4, 2) + np.array([x, y])
        np.testing.assert_allclose(shifted, (poly * params.scale).reshape(4, 2), atol=1.0)
        # Same scale: the side lengths are those of the letterboxed object.
        np.testing.assert_allclose(poly_to_obb(out.polygons)[0, 2:4],
                                   poly_to_obb(poly[None] * params.scale)[0, 2:4], rtol=1e-6)


def test_crop_with_other_augmentations_moves_image_and_polygon_together() -> None:
    cfg = dataclasses.replace(SINGLE_AUGMENTATIONS["rotate"], crop_size=160)
    rng = np.random.default_rng(3)
    kept = 0
    for _ in range(3):
        for poly in OBJECTS:
            img = object_image(poly, 300, 300)
            out = augment_sample(img, poly[None], np.zeros(1, np.int64), SIZE, cfg, rng)
            assert out.image.shape == (160, 160, 3)
            inside = out.keep.size and (out.polygons >= 1).all() and (out.polygons <= 159).all()
            if inside:  # wholly in the window: the white pixels are exactly the polygon
                kept += 1
                white = cv2.cvtColor(out.image, cv2.COLOR_RGB2GRAY) > 128
                assert iou(white, raster(out.polygons[0], 160)) >= 0.9
    assert kept >= 3


def test_crop_at_least_the_input_size_changes_nothing() -> None:
    assert is_identity(only(crop_size=SIZE), SIZE)
    assert not is_identity(only(crop_size=SIZE - 32), SIZE)


def test_crop_larger_than_the_input_gives_the_whole_canvas() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    out = augment_sample(img, np.zeros((0, 8)), np.zeros(0, np.int64), SIZE, only(crop_size=2 * SIZE), rng)
    np.testing.assert_array_equal(out.image, letterbox_image(img, SIZE)[0])


def _whole_share(p_on_objects: float, poly: np.ndarray, img: np.ndarray, crop: int,
                 tries: int = 100) -> float:
    cfg = only(crop_size=crop, crop_on_objects=p_on_objects)
    rng = np.random.default_rng(11)
    whole = 0
    for _ in range(tries):
        out = augment_sample(img, poly[None], np.zeros(1, np.int64), SIZE, cfg, rng)
        # A cut object is clipped to its visible part: whole means its full length is there.
        length = float(poly_to_obb(poly[None])[0, 2:4].max())
        whole += int(out.keep.size == 1
                     and abs(float(poly_to_obb(out.polygons)[0, 2:4].max()) - length) < 1e-6 * length)
    return whole / tries


def test_crop_on_objects_keeps_a_big_object_whole() -> None:
    """A 100 px object in 128 px windows of a 256 px canvas: a uniform window holds it whole only
    when the window's left edge falls in a 28 px band of 128 positions (about 1 in 20 with both
    axes); a window placed around it always does."""
    img = np.full((SIZE, SIZE, 3), 90, np.uint8)
    poly = rotated_box(128, 128, 100, 20, 0)
    assert _whole_share(0.0, poly, img, 128) < 0.5
    assert _whole_share(1.0, poly, img, 128) == 1.0


def test_crop_on_objects_window_shows_no_padding_when_the_content_allows() -> None:
    rng = np.random.default_rng(12)
    img = np.full((SIZE, SIZE, 3), 90, np.uint8)
    polys = np.stack([rotated_box(20, 20, 30, 10, 0), rotated_box(236, 236, 30, 10, 0)])
    for _ in range(20):
        out = augment_sample(img, polys, np.zeros(2, np.int64), SIZE,
                             only(crop_size=128, crop_on_objects=1.0), rng)
        assert out.image.min() == 90  # a corner object, yet the window stays on the image


def test_crop_on_objects_with_no_object_that_fits_falls_back_to_a_uniform_window() -> None:
    rng = np.random.default_rng(13)
    img = np.full((SIZE, SIZE, 3), 90, np.uint8)
    too_big = rotated_box(128, 128, 200, 200, 0)
    out = augment_sample(img, too_big[None], np.zeros(1, np.int64), SIZE,
                         only(crop_size=128, crop_on_objects=1.0), rng)
    assert out.image.shape == (128, 128, 3)
    assert out.difficult.tolist() == [1]  # cut: an ignore region


def test_crop_on_objects_outside_0_1_is_rejected() -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="crop_on_objects"):
        augment_sample(img, np.zeros((0, 8)), np.zeros(0, np.int64), 32,
                       only(crop_size=32, crop_on_objects=1.5, hflip=1.0), np.random.default_rng(0))
