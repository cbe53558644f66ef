r"""Training augmentation on an image and its polygons together, driven by :class:`AugmentConfig`.

One geometry, one resampling
----------------------------
Evaluation uses exactly :func:`bbavectors.data.letterbox.letterbox_image` (scale ``s0``, image at the
top-left of the ``S x S`` canvas). Training starts from the same letterbox geometry and composes,
as 3x3 matrices acting on the letterboxed content rectangle ``[0, w s0] x [0, h s0]``:

1. horizontal flip, vertical flip (probabilities ``hflip``, ``vflip``), about the content centre;
2. a rotation by 90, 180 or 270 degrees (``rot90``), about the content centre;
3. an arbitrary rotation (``rotate``) by an angle uniform in ``[-rotate_range, +rotate_range]``
   degrees, about the content centre. The canvas is **kept** at ``S x S``: the corners of the turned
   image fall outside and are cut (objects there are clipped, see below); uncovered areas are
   padding (0);
4. a random scale ``f`` uniform in ``[scale_min, scale_max]`` relative to the letterbox scale;
5. a random translation that crops (content larger than ``S``) or pads (content smaller) the
   bounding box of the transformed content to ``S x S`` at a uniformly random position; a position
   showing less than half of what the canvas could show (a corner of a turned image's bounding box)
   is redrawn, up to 10 times, then the content is centred.

With ``crop_size = C`` (< ``S``) steps 1-4 are the same (objects keep the scale they have at
inference, size ``S``) and step 5 places a ``C x C`` window instead: training sees a random part of
the image at a fraction ``(C / S)^2`` of the cost, which pays when objects are small and the
network's cost per pixel is what limits the budget. With probability ``crop_on_objects`` the window
is instead drawn among the positions that hold one whole object picked at random (and, where
possible, show no more padding than a uniform window): a uniform window cuts most objects longer
than half of ``C``, and a mostly cut object is only an ignore region.

The product with the letterbox scale maps the *original* image straight to the output, so the
image is resampled **once** (``cv2.warpAffine``, bilinear). When that map shrinks the image by more
than :data:`PRERESIZE_BELOW` (e.g. a 1024 px patch into 608), the image is first reduced with
``INTER_AREA`` (no aliasing) to about the final scale and the remaining near-unit warp follows.

Pixel convention: a continuous coordinate ``x`` lies in pixel ``floor(x)``; pixel ``i`` has its
centre at ``i + 0.5`` (as ``cv2.resize`` and DOTA labels assume), so a flip maps pixel ``i`` to
``W - 1 - i`` exactly. OpenCV's warp uses centres at integers; :func:`warp_image` converts.

Colour jitter (``color_jitter = j``) draws brightness, contrast and saturation factors uniform in
``[1 - j, 1 + j]`` and applies them as one per-pixel 3x4 colour matrix (``cv2.transform``), before
the warp so that padding stays 0 as in evaluation. Channel permutation only with
``channel_shuffle > 0`` (off by default: colour is informative in aerial images).

Objects cut by the canvas
-------------------------
Each polygon is mapped by the same matrix (corner order may reverse under flips; no code relies
on it). Polygons lying wholly inside the visible content keep their exact 4 corners. Others are
intersected with the visible region (canvas ``[0, S]^2`` intersected with the transformed image
rectangle) and reduced to the minimum-area rectangle of the intersection
(``shapely.oriented_envelope``, then :func:`DOTA_devkit.geometry.poly_to_obb` /
:func:`~DOTA_devkit.geometry.obb_to_poly` for the canonical corner order). When only a small corner
is cut, that rectangle is the original box itself and reaches slightly past the border: it still
describes the visible part best, and its centre stays inside. If less than
``min_visible`` (default 0.5) of the object's area remains, it is marked ``difficult = 1`` (the
targets make it an ignore region: neither positive nor negative); if less than
``min_area`` px^2 remains (default 1, the label parser's degenerate limit), it is removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import shapely
from numpy.typing import NDArray

from DOTA_devkit.geometry import obb_to_poly, poly_to_obb

from ..config import AugmentConfig
from .letterbox import LetterboxParams, letterbox_image, letterbox_params

__all__ = [
    "AugmentedSample",
    "PRERESIZE_BELOW",
    "DEFAULT_MIN_VISIBLE",
    "is_identity",
    "sample_geometry",
    "sample_color_matrix",
    "apply_color_matrix",
    "warp_image",
    "transform_points",
    "clip_polygons",
    "letterbox_sample",
    "augment_sample",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Random crop positions tried before falling back to a centred one (see sample_geometry).
MAX_PLACEMENT_TRIES = 10
#: Below this overall scale the image is pre-reduced with INTER_AREA before the warp.
PRERESIZE_BELOW = 0.75
#: Objects keeping less than this fraction of their area become difficult (ignore regions).
DEFAULT_MIN_VISIBLE = 0.5
#: Luma weights of RGB (ITU-R BT.601), used for contrast and saturation.
_LUMA = np.array([0.299, 0.587, 0.114])
_EPS = 1e-6


@dataclass
class AugmentedSample:
    """A letterboxed (and possibly augmented) image with its objects in network-input pixels."""

    image: NDArray[np.uint8]  # (S, S, 3) RGB
    polygons: FloatArray  # (M, 8) in output pixels
    keep: IntArray  # (M,) indices of the kept objects in the input arrays
    difficult: IntArray  # (M,) 0, 1 or 2 (1 added for objects mostly cut away)
    letterbox: LetterboxParams  # the evaluation letterbox of the original image


def is_identity(cfg: AugmentConfig, size: int | None = None) -> bool:
    """True when ``cfg`` can change nothing: training then equals the evaluation letterbox.

    ``size``: the input side; a ``crop_size`` below it is a change (a random window).
    """
    no_rotate = cfg.rotate <= 0 or cfg.rotate_range == 0
    no_crop = cfg.crop_size is None or (size is not None and cfg.crop_size >= size)
    return (
        no_crop and cfg.hflip <= 0 and cfg.vflip <= 0 and cfg.rot90 <= 0 and no_rotate
        and cfg.scale_min == 1.0 and cfg.scale_max == 1.0
        and cfg.color_jitter <= 0 and cfg.channel_shuffle <= 0
    )


def _translate(tx: float, ty: float) -> FloatArray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _linear(a: float, b: float, c: float, d: float) -> FloatArray:
    return np.array([[a, b, 0.0], [c, d, 0.0], [0.0, 0.0, 1.0]])


def _about(center: tuple[float, float], m: FloatArray) -> FloatArray:
    return _translate(*center) @ m @ _translate(-center[0], -center[1])


# Exact integer matrices for quarter turns (cos(pi/2) is not exactly 0 in floating point).
_QUARTER_TURNS = {1: _linear(0, -1, 1, 0), 2: _linear(-1, 0, 0, -1), 3: _linear(0, 1, -1, 0)}


def _check_config(cfg: AugmentConfig) -> None:
    if not 0 < cfg.scale_min <= cfg.scale_max:
        raise ValueError(f"augment.scale_min/scale_max must satisfy 0 < min <= max, got "
                         f"{cfg.scale_min}, {cfg.scale_max}")
    for name in ("hflip", "vflip", "rot90", "rotate", "channel_shuffle", "crop_on_objects"):
        p = getattr(cfg, name)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augment.{name} is a probability in [0, 1], got {p}")
    if cfg.color_jitter < 0:
        raise ValueError(f"augment.color_jitter must be >= 0, got {cfg.color_jitter}")


def sample_geometry(
    rng: np.random.Generator,
    cfg: AugmentConfig,
    content_w: float,
    content_h: float,
    size: int,
    objects: FloatArray | None = None,
) -> FloatArray:
    """Draw the random geometric transform of one sample (steps 1-5 of the module docstring).

    Args:
        rng: random source.
        cfg: augmentation settings.
        content_w, content_h: size of the letterboxed image (``w * s0``, ``h * s0``) at the canvas's
            top-left.
        size: output canvas side ``S``.
        objects: ``(N, 8)`` polygons in letterbox-canvas coordinates; with probability
            ``cfg.crop_on_objects`` the window is placed around one of them (see
            :func:`_window_around_object`).
    Returns:
        ``(3, 3)`` matrix mapping letterbox-canvas coordinates to output coordinates.
    """
    _check_config(cfg)
    center = (content_w / 2.0, content_h / 2.0)
    m = np.eye(3)
    if rng.random() < cfg.hflip:
        m = _about(center, _linear(-1, 0, 0, 1)) @ m
    if rng.random() < cfg.vflip:
        m = _about(center, _linear(1, 0, 0, -1)) @ m
    if rng.random() < cfg.rot90:
        m = _about(center, _QUARTER_TURNS[int(rng.integers(1, 4))]) @ m
    if cfg.rotate_range != 0 and rng.random() < cfg.rotate:
        a = math.radians(rng.uniform(-abs(cfg.rotate_range), abs(cfg.rotate_range)))
        c, s = math.cos(a), math.sin(a)
        m = _about(center, _linear(c, -s, s, c)) @ m
    f = rng.uniform(cfg.scale_min, cfg.scale_max) if cfg.scale_max > cfg.scale_min else cfg.scale_min
    if f != 1.0:
        m = _about(center, _linear(f, 0, 0, f)) @ m
    corners = transform_points(
        np.array([[0.0, 0.0, content_w, 0.0, content_w, content_h, 0.0, content_h]]), m
    ).reshape(4, 2)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    if objects is not None and len(objects) and cfg.crop_on_objects > 0 \
            and rng.random() < cfg.crop_on_objects:
        shift = _window_around_object(rng, transform_points(objects, m), lo, hi, size)
        if shift is not None:
            return _translate(shift[0], shift[1]) @ m
    content = shapely.Polygon(corners)
    # A turned image fills only part of its bounding box: a crop drawn there may show little
    # or nothing of it, so positions showing less than half of what could be shown are redrawn.
    wanted = 0.5 * min(content.area, float(size) ** 2)
    for _attempt in range(MAX_PLACEMENT_TRIES):
        shift = np.empty(2)
        for axis in range(2):
            # Crop when larger than the canvas, pad when smaller; either way a uniform position.
            a, b = sorted((0.0, size - float(hi[axis] - lo[axis])))
            shift[axis] = (rng.uniform(a, b) if b > a else a) - lo[axis]
        window = shapely.box(-shift[0], -shift[1], size - shift[0], size - shift[1])
        if shapely.intersection(content, window).area >= wanted:
            return _translate(shift[0], shift[1]) @ m
    # Fallback: the content's centre at the canvas centre.
    centre = corners.mean(axis=0)
    return _translate(size / 2 - centre[0], size / 2 - centre[1]) @ m


def _window_around_object(
    rng: np.random.Generator, objects: FloatArray, lo: FloatArray, hi: FloatArray, size: int
) -> FloatArray | None:
    """The shift of a ``size`` window holding one whole object drawn at random, or None.

    Args:
        objects: ``(N, 8)`` polygons after the rotation and scale (before the shift).
        lo, hi: ``(2,)`` corners of the bounding box of the transformed content.
    Returns:
        ``(2,)`` shift, uniform among those keeping the object inside the window and, where the
        content allows it, in the range of a uniform crop (no more padding than it would show);
        None when no object fits in the window.
    """
    xy = objects.reshape(-1, 4, 2)
    o_lo, o_hi = xy.min(axis=1), xy.max(axis=1)
    fits = np.flatnonzero(((o_hi - o_lo) <= size).all(axis=1))
    if fits.size == 0:
        return None
    k = int(fits[rng.integers(fits.size)])
    shift = np.empty(2)
    for axis in range(2):
        # The window [-shift, size - shift] holds [o_lo, o_hi] for shift in [-o_lo, size - o_hi].
        a, b = -float(o_lo[k, axis]), size - float(o_hi[k, axis])
        # A uniform crop's range (sample_geometry), kept where the two overlap.
        c, d = sorted((0.0, size - float(hi[axis] - lo[axis])))
        c, d = c - float(lo[axis]), d - float(lo[axis])
        if max(a, c) <= min(b, d):
            a, b = max(a, c), min(b, d)
        shift[axis] = rng.uniform(a, b) if b > a else a
    return shift


def sample_color_matrix(
    rng: np.random.Generator, cfg: AugmentConfig, mean_luma: float
) -> FloatArray | None:
    """Draw a colour transform ``rgb' = A @ rgb + t`` as a ``(3, 4)`` matrix ``[A | t]``.

    Brightness ``b``, contrast ``c`` (about the image's mean luma after brightness) and saturation
    ``s`` (towards each pixel's luma) compose to ``A = c b (s I + (1 - s) 1 w^T)``,
    ``t = (1 - c) b mean_luma``; a channel permutation, when drawn, permutes the rows.

    Args:
        mean_luma: mean luma of the image (0..255), the pivot of the contrast change.
    Returns:
        the matrix, or None when nothing changes.
    """
    j = cfg.color_jitter
    shuffle = cfg.channel_shuffle > 0 and rng.random() < cfg.channel_shuffle
    if j <= 0 and not shuffle:
        return None
    if j > 0:
        b, c, s = (max(0.0, rng.uniform(1 - j, 1 + j)) for _ in range(3))
    else:
        b = c = s = 1.0
    sat = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), _LUMA)
    lin = c * b * sat
    offset = np.full(3, (1 - c) * b * mean_luma)
    if shuffle:
        perm = rng.permutation(3)
        lin, offset = lin[perm], offset[perm]
    return np.concatenate([lin, offset[:, None]], axis=1)


def apply_color_matrix(image: NDArray[np.uint8], matrix: FloatArray) -> NDArray[np.uint8]:
    """``(H, W, 3)`` uint8 -> same shape, each pixel ``A @ rgb + t`` rounded and saturated."""
    return np.asarray(cv2.transform(image, matrix.astype(np.float32)), dtype=np.uint8)


def transform_points(polygons: FloatArray, matrix: FloatArray) -> FloatArray:
    """Apply a ``(3, 3)`` affine matrix to ``(N, 2k)`` interleaved points; returns ``(N, 2k)``."""
    p = np.asarray(polygons, dtype=np.float64)
    xy = p.reshape(p.shape[0], p.shape[1] // 2, 2)
    out = xy @ matrix[:2, :2].T + matrix[:2, 2]
    return out.reshape(p.shape)


def warp_image(image: NDArray[np.uint8], matrix: FloatArray, size: int) -> NDArray[np.uint8]:
    """Resample ``image`` ``(H, W, 3)`` into ``(size, size, 3)`` through ``matrix`` (3x3, source
    continuous coordinates -> output continuous coordinates), padding with 0.

    Strong reductions first go through ``cv2.resize(INTER_AREA)`` (see :data:`PRERESIZE_BELOW`).
    """
    m = np.asarray(matrix, dtype=np.float64)
    h, w = image.shape[:2]
    scale = math.sqrt(abs(np.linalg.det(m[:2, :2])))
    if scale < PRERESIZE_BELOW:
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        image = np.asarray(cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), dtype=np.uint8)
        m = m @ _linear(w / nw, 0, 0, h / nh)
    # Continuous (pixel i spans [i, i+1)) -> OpenCV (pixel i centred at i).
    m_cv = _translate(-0.5, -0.5) @ m @ _translate(0.5, 0.5)
    warped = cv2.warpAffine(image, m_cv[:2], (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return np.asarray(warped, dtype=np.uint8)


def _points_inside(polygons: FloatArray, region: FloatArray) -> NDArray[np.bool_]:
    """``(N,)``: all 4 corners inside the convex polygon ``region`` ``(K, 2)``, either orientation."""
    q = region.reshape(-1, 2)
    p = polygons.reshape(-1, 4, 1, 2)
    e0, e1 = q, np.roll(q, -1, axis=0)
    cross = (e1[:, 0] - e0[:, 0]) * (p[..., 1] - e0[:, 1]) - (e1[:, 1] - e0[:, 1]) * (p[..., 0] - e0[:, 0])
    scale = float(np.abs(e1 - e0).max()) + 1.0
    tol = _EPS * scale
    inside = np.all(cross >= -tol, axis=-1) | np.all(cross <= tol, axis=-1)  # (N, 4)
    return inside.all(axis=1)  # type: ignore[no-any-return]


def clip_polygons(
    polygons: FloatArray,
    region: FloatArray,
    min_visible: float = DEFAULT_MIN_VISIBLE,
    min_area: float = 1.0,
) -> tuple[FloatArray, IntArray, NDArray[np.bool_]]:
    """Clip polygons to a convex visible region (see "Objects cut by the canvas").

    Args:
        polygons: ``(N, 8)``.
        region: ``(K, 2)`` (or flat ``(2K,)``) vertices of the convex visible region, in order
            (e.g. the canvas ``[[0, 0], [S, 0], [S, S], [0, S]]``).
        min_visible: objects keeping a smaller fraction of their area are flagged.
        min_area: cut objects keeping less than this area (px^2) are removed.
    Returns:
        ``polygons (M, 8)``, ``keep (M,)`` indices into the input, ``mostly_cut (M,)`` bool
        (visible fraction < ``min_visible``).
    """
    polys = np.asarray(polygons, dtype=np.float64).reshape(-1, 8)
    n = polys.shape[0]
    out = polys.copy()
    keep = np.ones(n, dtype=bool)
    mostly_cut = np.zeros(n, dtype=bool)
    region_xy = np.asarray(region, dtype=np.float64).reshape(-1, 2)
    cut = np.flatnonzero(~_points_inside(polys, region_xy))
    if cut.size == 0:
        return out, np.arange(n, dtype=np.int64), mostly_cut
    hulls = shapely.convex_hull(shapely.multipoints(polys[cut].reshape(-1, 4, 2)))
    visible = shapely.intersection(hulls, shapely.convex_hull(shapely.multipoints(region_xy)))
    full_area = shapely.area(hulls)
    vis_area = shapely.area(visible)
    envelopes = shapely.oriented_envelope(visible)
    rect_rows: list[int] = []
    rects: list[FloatArray] = []
    for k, i in enumerate(cut):
        corners = shapely.get_coordinates(envelopes[k])[:4]
        if vis_area[k] < min_area or full_area[k] <= 0 or corners.shape[0] < 4:
            keep[i] = False
            continue
        rect_rows.append(int(i))
        rects.append(corners.reshape(8))
        mostly_cut[i] = vis_area[k] / full_area[k] < min_visible
    if rects:
        out[rect_rows] = obb_to_poly(poly_to_obb(np.stack(rects)))
    idx = np.flatnonzero(keep).astype(np.int64)
    return out[idx], idx, mostly_cut[idx]


def _visible_region(image_rect: FloatArray, size: int) -> FloatArray:
    """``(K, 2)`` vertices of the transformed image rectangle intersected with the canvas (convex)."""
    canvas = shapely.box(0.0, 0.0, float(size), float(size))
    quad = shapely.convex_hull(shapely.multipoints(image_rect.reshape(4, 2)))
    visible = shapely.intersection(quad, canvas)
    coords = shapely.get_coordinates(shapely.get_exterior_ring(visible)) if not visible.is_empty else None
    if coords is None or coords.shape[0] < 4:
        raise ValueError("the transformed image does not overlap the canvas")
    return coords[:-1]  # type: ignore[no-any-return]


def letterbox_sample(
    image: NDArray[np.uint8], polygons: FloatArray, size: int
) -> tuple[NDArray[np.uint8], FloatArray, LetterboxParams]:
    """The evaluation geometry: :func:`letterbox_image` and the same map on the polygons.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        polygons: ``(N, 8)`` original-image pixels.
    Returns:
        ``(S, S, 3)`` canvas, ``(N, 8)`` polygons in canvas pixels (not clipped), the parameters.
    """
    canvas, params = letterbox_image(image, size)
    return canvas, params.apply(np.asarray(polygons, dtype=np.float64).reshape(-1, 8)), params


def augment_sample(
    image: NDArray[np.uint8],
    polygons: FloatArray,
    difficult: IntArray,
    size: int,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    min_visible: float = DEFAULT_MIN_VISIBLE,
) -> AugmentedSample:
    """Letterbox then augment one training sample (module docstring).

    Args:
        image: ``(H, W, 3)`` uint8 RGB, the decoded original.
        polygons: ``(N, 8)`` in original-image pixels.
        difficult: ``(N,)`` 0/1/2.
        size: network input side ``S`` (the scale); the output is ``S x S``, or
            ``crop_size x crop_size`` when ``cfg.crop_size`` is set (a random window at that scale).
        cfg: augmentation settings; :func:`is_identity` settings give exactly the letterbox.
        rng: random source (one per worker process).
        min_visible: see :func:`clip_polygons`.
    Returns:
        an :class:`AugmentedSample`; polygons outside the visible content are clipped.
    """
    polys = np.asarray(polygons, dtype=np.float64).reshape(-1, 8)
    diff = np.asarray(difficult, dtype=np.int64).reshape(-1)
    if diff.shape[0] != polys.shape[0]:
        raise ValueError(f"{polys.shape[0]} polygons but {diff.shape[0]} difficult flags")
    h, w = image.shape[:2]
    params = letterbox_params(h, w, size)
    if any(cfg.label_shift):
        # Before the flips, so that the shift turns with the image (AugmentConfig.label_shift).
        polys = polys.copy()
        polys[:, 0::2] += cfg.label_shift[0] / params.scale
        polys[:, 1::2] += cfg.label_shift[1] / params.scale
    image_rect = np.array([0.0, 0.0, w, 0.0, w, h, 0.0, h])
    out_size = size if cfg.crop_size is None else min(int(cfg.crop_size), size)
    if is_identity(cfg, size):
        canvas, lb_polys, params = letterbox_sample(image, polys, size)
        total = _linear(params.scale, 0, 0, params.scale)
    else:
        # Scaled as for the full input, cut to out_size: a crop keeps objects at their inference size.
        objects = polys * params.scale if out_size < size else None
        geometry = sample_geometry(rng, cfg, w * params.scale, h * params.scale, out_size, objects)
        total = geometry @ _linear(params.scale, 0, 0, params.scale)
        # The mean luma is only the contrast pivot: without colour jitter the contrast is 1 and it
        # drops out, so skip a full pass over every image on the loader's hot path.
        mean_luma = _mean_luma(image) if cfg.color_jitter > 0 else 0.0
        color = sample_color_matrix(rng, cfg, mean_luma)
        source = image if color is None else apply_color_matrix(image, color)
        canvas = warp_image(source, total, out_size)
        lb_polys = transform_points(polys, total)
    region = _visible_region(transform_points(image_rect[None], total)[0], out_size)
    out, keep, mostly_cut = clip_polygons(lb_polys, region, min_visible=min_visible)
    new_diff = diff[keep].copy()
    new_diff[mostly_cut] = np.maximum(new_diff[mostly_cut], 1)
    return AugmentedSample(canvas, out, keep, new_diff, params)


def _mean_luma(image: NDArray[np.uint8]) -> float:
    r, g, b, _ = cv2.mean(image)
    return float(_LUMA @ np.array([r, g, b]))
