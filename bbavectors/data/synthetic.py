"""Synthetic DOTA-format data: textured aerial-like scenes with oriented objects of 5 classes.

Classes (``DOTA_devkit.classes.SYNTHETIC``) differ in shape and colour, so that a detector can
learn them quickly:

==============  =============================================  ==============  ======================
class           shape (long side ``L``)                        colour (RGB)    label box (``w x h``)
==============  =============================================  ==============  ======================
plane           fuselage + swept wings + tail (a cross)        white           ``L x 0.8 L`` along the
                                                                               fuselage
ship            hull with a pointed bow, light deck stripe     red             ``L x 0.24 L``
small-vehicle   small rectangle, dark windscreen               blue            ``L x 0.5 L``
large-vehicle   long rectangle, cab in another shade           yellow          ``L x 0.3 L``
storage-tank    disc with a darker ring                        cyan            axis-aligned square
==============  =============================================  ==============  ======================

Every label polygon is the exact box of the drawn shape (tight on all 4 sides; the plane's box
follows its fuselage like DOTA's annotators do). Objects are placed at any angle, never overlapping
(some placed touching a neighbour, like parked vehicles), some across the image border: as
DOTA's split tool does, their labels are clipped to the image (min-area rectangle of the visible
part) and those with less than 70% left are ``difficult = 2``; objects with less than 15% visible
are not drawn. A fraction is drawn faint (blended with the background) and labelled
``difficult = 1``. Backgrounds: base colour, gradient, low-frequency noise, blurred blobs, roads and
pixel noise, scaled by ``texture`` (0 = plain colour).

Written as ``images/*.png``, ``labelTxt/*.txt`` (headers ``imagesource:synthetic`` and ``gsd:``),
``trainval.txt`` / ``val.txt`` / ``test.txt`` (disjoint, all labelled) and ``classes.txt``. The
output depends only on the seed and the parameters (each image uses its own generator
``default_rng([seed, index])``).

:func:`ensure_default_dataset` caches the small, easy default set that ``tools/train.py`` uses
when no data set is given.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import shapely
from numpy.typing import NDArray
from tqdm import tqdm

from DOTA_devkit.classes import SYNTHETIC, write_class_file
from DOTA_devkit.geometry import obb_to_poly, poly_to_obb
from DOTA_devkit.labels import DotaObject, write_dota_label

from .image_io import write_image

__all__ = [
    "GENERATOR_VERSION",
    "SyntheticParams",
    "SyntheticScene",
    "DEFAULT_PARAMS",
    "render_scene",
    "make_synthetic_dataset",
    "ensure_default_dataset",
    "default_dataset_root",
    "MARKER_NAME",
    "CLASS_COLORS",
    "ensure_dataset",
]

logger = logging.getLogger(__name__)

#: Bump when the drawings or the layout change: cached default sets are then regenerated.
GENERATOR_VERSION = 1
MARKER_NAME = ".bbav_synthetic.json"
#: Objects keeping less than this fraction inside the image are labelled difficult = 2.
CUT_DIFFICULT_BELOW = 0.7
#: Objects keeping less than this fraction inside the image are not placed at all.
CUT_REJECT_BELOW = 0.15
GSD = 0.5

FloatArray = NDArray[np.float64]
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class SyntheticParams:
    """What a synthetic set looks like (saved in the cache marker of the default set)."""

    image_size: int = 608
    #: Objects per image, inclusive range (fewer when no free place is found).
    num_objects: tuple[int, int] = (5, 25)
    #: Long side of the objects in pixels, before per-class ranges within it.
    size_range: tuple[float, float] = (8.0, 200.0)
    difficult_fraction: float = 0.05
    border_fraction: float = 0.1
    touch_fraction: float = 0.15
    texture: float = 0.6
    val_fraction: float = 0.2
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        lo, hi = self.num_objects
        if not 0 <= lo <= hi:
            raise ValueError(f"num_objects must be 0 <= min <= max, got {self.num_objects}")
        if not 1 <= self.size_range[0] <= self.size_range[1]:
            raise ValueError(f"size_range must be 1 <= min <= max, got {self.size_range}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise ValueError("val_fraction + test_fraction must be in [0, 1)")
        for name in ("difficult_fraction", "border_fraction", "touch_fraction", "texture"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


#: The default set: small, easy and quick to learn (validation mAP >= 0.5 in a short CPU run).
DEFAULT_PARAMS = SyntheticParams(
    image_size=320, num_objects=(4, 12), size_range=(16.0, 96.0), difficult_fraction=0.03,
    border_fraction=0.08, touch_fraction=0.15, texture=0.5, val_fraction=40 / 280, test_fraction=0.1,
)
DEFAULT_NUM_IMAGES = 280
DEFAULT_SEED = 0


@dataclass
class SyntheticScene:
    """One rendered image, its labels and (optionally) which object covers each pixel."""

    image: NDArray[np.uint8]  # (S, S, 3) RGB
    objects: list[DotaObject]
    #: (S, S) uint16: 0 background, k = objects[k - 1] (None unless asked for). Objects cut away
    #: entirely are absent from ``objects`` and never drawn.
    instance_map: NDArray[np.uint16] | None = None


@dataclass(frozen=True)
class _ClassStyle:
    color: tuple[int, int, int]
    size_span: tuple[float, float]  # fraction of size_range
    aspect: float  # label h / w
    axis_aligned: bool = False


_STYLES: dict[str, _ClassStyle] = {
    "plane": _ClassStyle((238, 238, 242), (0.35, 1.0), 0.8),
    "ship": _ClassStyle((205, 40, 35), (0.2, 1.0), 0.24),
    "small-vehicle": _ClassStyle((35, 75, 225), (0.0, 0.25), 0.5),
    "large-vehicle": _ClassStyle((245, 205, 25), (0.2, 0.6), 0.3),
    "storage-tank": _ClassStyle((30, 200, 215), (0.1, 0.6), 1.0, axis_aligned=True),
}
assert tuple(_STYLES) == SYNTHETIC
#: Base colour (RGB) of each class; each object varies it by up to 18 per channel.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {name: style.color for name, style in _STYLES.items()}


def _mirror(parts: list[list[tuple[float, float]]]) -> list[list[tuple[float, float]]]:
    return [[(x, -y) for x, y in p] for p in parts]


# Shapes in units of the long side, centred, long axis along +x (the label box is
# [-0.5, 0.5] x [-aspect/2, aspect/2]): layers of (convex polygons, shade), drawn in order.
_PLANE_WING = [(0.16, -0.06), (-0.04, -0.4), (-0.16, -0.4), (-0.1, -0.06)]
_PLANE_TAIL = [(-0.36, -0.04), (-0.45, -0.16), (-0.5, -0.16), (-0.5, -0.04)]
_Layer = tuple[list[list[tuple[float, float]]], float]
_SHAPES: dict[str, list[_Layer]] = {
    "plane": [([[(-0.5, -0.05), (0.38, -0.06), (0.5, 0.0), (0.38, 0.06), (-0.5, 0.05)],
                _PLANE_WING, _PLANE_TAIL, *_mirror([_PLANE_WING, _PLANE_TAIL])], 1.0)],
    "ship": [([[(-0.5, -0.12), (0.25, -0.12), (0.5, 0.0), (0.25, 0.12), (-0.5, 0.12)]], 1.0),
             ([[(-0.3, -0.05), (0.15, -0.05), (0.15, 0.05), (-0.3, 0.05)]], 1.35)],
    "small-vehicle": [([[(-0.5, -0.25), (0.5, -0.25), (0.5, 0.25), (-0.5, 0.25)]], 1.0),
                      ([[(0.12, -0.2), (0.3, -0.2), (0.3, 0.2), (0.12, 0.2)]], 0.35)],
    "large-vehicle": [([[(-0.5, -0.15), (0.5, -0.15), (0.5, 0.15), (-0.5, 0.15)]], 1.0),
                      ([[(0.3, -0.15), (0.5, -0.15), (0.5, 0.15), (0.3, 0.15)]], 0.6)],
}
#: Anti-aliasing by supersampling: shapes are filled at this many sub-pixels per pixel and
#: averaged (OpenCV's own LINE_AA fill spreads about 0.6 px past the true edge).
_SUPERSAMPLE = 4


@dataclass
class _Placed:
    class_name: str
    center: tuple[float, float]
    length: float
    angle: float
    box: FloatArray  # (8,) unclipped label box
    faint: bool


def _local_to_image(pts: Sequence[tuple[float, float]], obj: _Placed) -> FloatArray:
    p = np.asarray(pts, dtype=np.float64) * obj.length
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    rot = np.array([[c, -s], [s, c]])
    return p @ rot.T + np.asarray(obj.center)


def _label_box(class_name: str, center: tuple[float, float], length: float, angle: float) -> FloatArray:
    aspect = _STYLES[class_name].aspect
    return obb_to_poly(np.array([[center[0], center[1], length, length * aspect, angle]]))[0]


# ------------------------------------------------------------------------------------- backgrounds
def _background(rng: np.random.Generator, size: int, texture: float) -> NDArray[np.uint8]:
    palette = np.array([[112, 102, 82], [92, 104, 80], [120, 116, 106], [102, 92, 76], [86, 92, 88]])
    base = palette[rng.integers(len(palette))] + rng.uniform(-12, 12, 3)
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if texture > 0:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        a = rng.uniform(0, 2 * math.pi)
        ramp = (math.cos(a) * xx + math.sin(a) * yy)[..., None]
        img = img + (ramp - 0.5) * rng.uniform(10, 35) * texture
        coarse = rng.normal(0, 1, (6, 6, 3)).astype(np.float32)
        img = img + cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) * 14 * texture
        img = _blobs(rng, img, size, texture)
        img = _roads(rng, img, size, texture)
        img = img + rng.normal(0, 5 * texture, img.shape).astype(np.float32)
    return np.ascontiguousarray(np.clip(np.rint(img), 0, 255), dtype=np.uint8)


def _blobs(
    rng: np.random.Generator, img: NDArray[np.float32], size: int, texture: float
) -> NDArray[np.float32]:
    layer = np.zeros_like(img)
    weight = np.zeros(img.shape[:2], np.float32)
    for _ in range(int(rng.integers(3, 9))):
        center = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (int(rng.integers(size // 16, size // 4)), int(rng.integers(size // 16, size // 4)))
        color = np.clip(img[center[1], center[0]] + rng.uniform(-35, 35, 3), 0, 255)
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(layer, center, axes, angle, 0, 360, color.tolist(), -1)
        cv2.ellipse(weight, center, axes, angle, 0, 360, 1.0, -1)
    sigma = size / 40
    layer = np.asarray(cv2.GaussianBlur(layer, (0, 0), sigma), dtype=np.float32)
    weight = np.asarray(cv2.GaussianBlur(weight, (0, 0), sigma), dtype=np.float32)
    # Blurred premultiplied colour / blurred coverage = the blobs' colour with soft edges.
    color = layer / np.maximum(weight, 1e-6)[..., None]
    w = (weight * 0.7 * texture)[..., None]
    return img * (1 - w) + color * w  # type: ignore[no-any-return]


def _roads(
    rng: np.random.Generator, img: NDArray[np.float32], size: int, texture: float
) -> NDArray[np.float32]:
    out = img.copy()
    for _ in range(int(rng.integers(0, 3))):
        gray = float(rng.uniform(95, 150))
        p1 = (int(rng.integers(-size // 4, size + size // 4)), -size // 8)
        p2 = (int(rng.integers(-size // 4, size + size // 4)), size + size // 8)
        if rng.random() < 0.5:
            p1, p2 = (p1[1], p1[0]), (p2[1], p2[0])
        thickness = max(2, int(size * rng.uniform(0.02, 0.045)))
        cv2.line(out, p1, p2, (gray, gray, gray * 0.97), thickness, cv2.LINE_AA)
    return img * (1 - texture) + out * texture


# ------------------------------------------------------------------------------------------ objects
def _sample_object(
    rng: np.random.Generator, params: SyntheticParams, placed: list[_Placed]
) -> _Placed:
    size = params.image_size
    name = SYNTHETIC[int(rng.integers(len(SYNTHETIC)))]
    style = _STYLES[name]
    lo, hi = params.size_range
    f = rng.uniform(*style.size_span)
    length = float(lo + (hi - lo) * f)
    angle = 0.0 if style.axis_aligned else float(rng.uniform(0, math.pi))
    faint = bool(rng.random() < params.difficult_fraction)
    neighbours = [p for p in placed if not _STYLES[p.class_name].axis_aligned]
    if neighbours and not style.axis_aligned and rng.random() < params.touch_fraction:
        # Side by side with a neighbour, same heading: a parking-lot row.
        ref = neighbours[int(rng.integers(len(neighbours)))]
        gap = (ref.length * _STYLES[ref.class_name].aspect + length * style.aspect) / 2 + rng.uniform(0, 1.5)
        side = 1.0 if rng.random() < 0.5 else -1.0
        normal = (-math.sin(ref.angle) * side, math.cos(ref.angle) * side)
        center = (ref.center[0] + normal[0] * gap, ref.center[1] + normal[1] * gap)
        angle = ref.angle
    elif rng.random() < params.border_fraction:
        edge_offset = float(rng.uniform(-0.3, 0.3)) * length
        along = float(rng.uniform(0, size))
        side_pick = int(rng.integers(4))
        across = edge_offset if side_pick < 2 else size - edge_offset
        center = (across, along) if side_pick % 2 == 0 else (along, across)
    else:
        # Half extents of the turned box, so that the object lies wholly inside the image.
        c, s = abs(math.cos(angle)), abs(math.sin(angle))
        half_w, half_h = length / 2, length * style.aspect / 2
        mx = min(half_w * c + half_h * s, size / 2)
        my = min(half_w * s + half_h * c, size / 2)
        center = (float(rng.uniform(mx, size - mx)), float(rng.uniform(my, size - my)))
    return _Placed(name, center, length, angle, _label_box(name, center, length, angle), faint)


def _place_objects(
    rng: np.random.Generator, params: SyntheticParams
) -> list[tuple[_Placed, FloatArray, float]]:
    """Objects that fit without overlap: (object, label polygon clipped to the image, visible fraction)."""
    size = params.image_size
    frame = shapely.box(0, 0, size, size)
    wanted = int(rng.integers(params.num_objects[0], params.num_objects[1] + 1))
    placed: list[_Placed] = []
    out: list[tuple[_Placed, FloatArray, float]] = []
    geoms: list[shapely.Geometry] = []
    for _ in range(wanted):
        for _attempt in range(40):
            obj = _sample_object(rng, params, placed)
            geom = shapely.Polygon(obj.box.reshape(4, 2))
            if any(shapely.intersection(geom, g).area > 0.02 * min(geom.area, g.area) for g in geoms):
                continue
            visible = shapely.intersection(geom, frame)
            fraction = visible.area / geom.area
            if fraction < CUT_REJECT_BELOW:
                continue
            label = obj.box
            if fraction < 1 - 1e-9:
                corners = shapely.get_coordinates(shapely.oriented_envelope(visible))[:4]
                label = obb_to_poly(poly_to_obb(corners.reshape(1, 8)))[0]
            placed.append(obj)
            geoms.append(geom)
            out.append((obj, label, fraction))
            break
    return out


def _hires(points: FloatArray, origin: tuple[int, int]) -> NDArray[np.int32]:
    """Image coordinates -> fixed-point coordinates of the supersampled patch at ``origin``.

    Pixel i is centred at i + 0.5 in label coordinates but at i in OpenCV's drawing.
    """
    p = (points.reshape(-1, 2) - np.asarray(origin, float)) * _SUPERSAMPLE - 0.5
    return np.round(p * _ONE).astype(np.int32)


def _layer_alphas(obj: _Placed, origin: tuple[int, int], shape: tuple[int, int]) -> list[tuple[
        NDArray[np.float32], float]]:
    """Coverage ``(h, w)`` in [0, 1] of each layer of ``obj`` on the patch, with its shade."""
    hi = (shape[0] * _SUPERSAMPLE, shape[1] * _SUPERSAMPLE)
    masks: list[tuple[NDArray[np.uint8], float]] = []
    if obj.class_name == "storage-tank":
        center = tuple(_hires(np.asarray(obj.center, float), origin)[0].tolist())
        disc = np.zeros(hi, np.uint8)
        cv2.circle(disc, center, round(obj.length / 2 * _SUPERSAMPLE * _ONE), 255, -1, cv2.LINE_8, _SHIFT)
        ring = np.zeros(hi, np.uint8)
        thickness = max(1, round(obj.length * 0.06 * _SUPERSAMPLE))
        cv2.circle(ring, center, round(obj.length * 0.38 * _SUPERSAMPLE * _ONE), 255, thickness,
                   cv2.LINE_8, _SHIFT)
        masks = [(disc, 1.0), (ring, 0.6)]
    else:
        for polygons, shade in _SHAPES[obj.class_name]:
            m = np.zeros(hi, np.uint8)
            for pts in polygons:
                cv2.fillPoly(m, [_hires(_local_to_image(pts, obj), origin)], 255, cv2.LINE_8, _SHIFT)
            masks.append((m, shade))
    size = (shape[1], shape[0])
    return [(np.asarray(cv2.resize(m, size, interpolation=cv2.INTER_AREA), np.float32) / 255.0, shade)
            for m, shade in masks]


def _draw(img: NDArray[np.uint8], obj: _Placed, rng: np.random.Generator,
          instance_map: NDArray[np.uint16] | None, instance: int) -> None:
    style = _STYLES[obj.class_name]
    color = np.clip(np.asarray(style.color, np.float64) + rng.uniform(-18, 18, 3), 0, 255)
    size = img.shape[0]
    lo = np.floor(obj.box.reshape(4, 2).min(axis=0)).astype(int) - 1
    hi = np.ceil(obj.box.reshape(4, 2).max(axis=0)).astype(int) + 1
    x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
    x1, y1 = min(size, int(hi[0])), min(size, int(hi[1]))
    if x1 <= x0 or y1 <= y0:
        return
    layers = _layer_alphas(obj, (x0, y0), (y1 - y0, x1 - x0))
    patch = img[y0:y1, x0:x1].astype(np.float32)
    # Faint = hard to see: the drawing is blended half into the background.
    opacity = 0.45 if obj.faint else 1.0
    for alpha, shade in layers:
        a = (alpha * opacity)[..., None]
        patch = patch * (1 - a) + np.clip(color * shade, 0, 255).astype(np.float32) * a
    img[y0:y1, x0:x1] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    if instance_map is not None:
        covered = layers[0][0] >= 0.5  # pixels more than half covered by the object
        instance_map[y0:y1, x0:x1][covered] = instance


def render_scene(
    rng: np.random.Generator, params: SyntheticParams, with_instance_map: bool = False
) -> SyntheticScene:
    """Draw one image and its labels (module docstring).

    Args:
        rng: random source.
        params: what to draw.
        with_instance_map: also return which object covers each pixel (for tests).
    """
    size = params.image_size
    img = _background(rng, size, params.texture)
    instance_map = np.zeros((size, size), np.uint16) if with_instance_map else None
    objects = []
    for k, (obj, label, fraction) in enumerate(_place_objects(rng, params), 1):
        _draw(img, obj, rng, instance_map, k)
        difficult = 2 if fraction < CUT_DIFFICULT_BELOW else (1 if obj.faint else 0)
        objects.append(DotaObject(np.asarray(label, dtype=np.float64), obj.class_name, difficult))
    return SyntheticScene(img, objects, instance_map)


# ------------------------------------------------------------------------------------ data sets
def _write_lines(path: Path, lines: Sequence[str]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def _split_ids(ids: list[str], seed: int, params: SyntheticParams) -> dict[str, list[str]]:
    order = np.random.default_rng([seed, 1 << 30]).permutation(len(ids))
    n_test = int(round(len(ids) * params.test_fraction))
    n_val = int(round(len(ids) * params.val_fraction))
    shuffled = [ids[i] for i in order]
    return {
        "test": sorted(shuffled[:n_test]),
        "val": sorted(shuffled[n_test:n_test + n_val]),
        "trainval": sorted(shuffled[n_test + n_val:]),
    }


def make_synthetic_dataset(
    out_dir: str | Path,
    num_images: int,
    seed: int,
    image_size: int = 608,
    params: SyntheticParams | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Path:
    """Write a synthetic DOTA-format data set (layout in the module docstring).

    The set records its parameters in ``out_dir/.bbav_synthetic.json`` (:data:`MARKER_NAME`), so that
    a folder is only ever rewritten by the same generation: a non-empty ``out_dir`` that is not a
    synthetic set of the same generator version, image count, seed and parameters (someone's data,
    or another synthetic set) is refused with :class:`FileExistsError` and left untouched.

    Args:
        out_dir: created if needed; an empty folder, or the same set (rewritten identically).
        num_images: images in total (split into trainval / val / test).
        seed: non-negative; the same seed and parameters give identical files.
        image_size: square image side (overrides ``params.image_size``).
        params: everything else (:class:`SyntheticParams`); keyword ``overrides`` replace its fields,
            e.g. ``num_objects=(2, 4)``.
        progress: show a tqdm bar.
    Returns:
        ``out_dir`` as a Path.
    Raises:
        FileExistsError: ``out_dir`` holds other files (above); the message names the folder.
    """
    if num_images <= 0:
        raise ValueError(f"num_images must be positive, got {num_images}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    params = dataclasses.replace(params or SyntheticParams(), image_size=image_size, **overrides)
    out = Path(out_dir)
    wanted = _marker(num_images, seed, params)
    _refuse_foreign_folder(out, wanted)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labelTxt").mkdir(parents=True, exist_ok=True)
    ids = [f"syn{i:05d}" for i in range(num_images)]
    for i, image_id in enumerate(tqdm(ids, desc="synthetic images", disable=not progress, leave=False)):
        scene = render_scene(np.random.default_rng([seed, i]), params)
        write_image(out / "images" / f"{image_id}.png", scene.image)
        write_dota_label(out / "labelTxt" / f"{image_id}.txt", scene.objects,
                         imagesource="synthetic", gsd=GSD)
    for name, members in _split_ids(ids, seed, params).items():
        _write_lines(out / f"{name}.txt", members)
    write_class_file(out / "classes.txt", list(SYNTHETIC))
    _write_lines(out / MARKER_NAME, [json.dumps(wanted, indent=1)])
    return out


def _refuse_foreign_folder(out: Path, wanted: dict[str, Any]) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    found = _read_marker(out)
    if found is None:
        raise FileExistsError(f"{out} is not empty and is not a synthetic set (no {MARKER_NAME}); "
                              "refusing to overwrite it: choose an empty or new folder")
    if found != wanted:
        changed = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
        if "params" in changed:
            fp, wp = found.get("params") or {}, wanted["params"]
            changed += sorted(f"params.{k}" for k in wp if fp.get(k) != wp[k])
        raise FileExistsError(f"{out} holds a synthetic set of other parameters ({', '.join(changed)} "
                              "differ); refusing to overwrite it: choose an empty or new folder")


# ------------------------------------------------------------------------------- default data set
def default_dataset_root() -> Path:
    """``<repo>/datasets/synthetic`` when this package runs from a writable source checkout,
    else ``~/.cache/bbavectors/synthetic``."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "setup.py").is_file() or (repo / "pyproject.toml").is_file():
        datasets = repo / "datasets"
        try:
            datasets.mkdir(exist_ok=True)
            if os.access(datasets, os.W_OK):
                return datasets / "synthetic"
        except OSError:
            pass
    return Path.home() / ".cache" / "bbavectors" / "synthetic"


def _marker(num_images: int, seed: int, params: SyntheticParams) -> dict[str, Any]:
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}
    return {"generator_version": GENERATOR_VERSION, "num_images": num_images, "seed": seed, "params": fields}


def _read_marker(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ensure_dataset(root: str | Path, num_images: int, seed: int, params: SyntheticParams) -> Path:
    """Generate a synthetic set at ``root`` once; reuse it while its marker matches.

    Generation goes to a temporary sibling folder that is renamed into place, so an interrupted
    run never leaves a half-written set behind. A stale set (older generator or other parameters)
    is replaced; a non-empty folder without the marker is someone's data and is never deleted.
    """
    root = Path(root)
    wanted = _marker(num_images, seed, params)
    if _read_marker(root) == wanted:
        return root
    if root.exists() and _read_marker(root) is None and any(root.iterdir()):
        raise FileExistsError(f"{root} holds files that are not a bbavectors synthetic set "
                              f"(no {MARKER_NAME}); refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    logger.info("generating the synthetic data set (%d images of %d px) in %s",
                num_images, params.image_size, root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        make_synthetic_dataset(tmp, num_images, seed, params.image_size, params)
        (tmp / MARKER_NAME).write_text(json.dumps(wanted, indent=1), encoding="utf-8")
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / root.name)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            # Another process finished first: use its set if it is the one we want.
            if _read_marker(root) != wanted:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def ensure_default_dataset(root: str | Path | None = None) -> Path:
    """The default synthetic set (``DEFAULT_PARAMS``: 280 images of 320 px, 4-12 objects of
    16-96 px; trainval 212 / val 40 / test 28), generated on first use and cached.

    Args:
        root: where to keep it; default :func:`default_dataset_root`.
    Returns:
        the data set folder (``images/``, ``labelTxt/``, split files, ``classes.txt``).
    """
    return ensure_dataset(root if root is not None else default_dataset_root(),
                          DEFAULT_NUM_IMAGES, DEFAULT_SEED, DEFAULT_PARAMS)
