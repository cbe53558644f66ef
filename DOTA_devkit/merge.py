"""Merge patch-level detections into scene-level detections (DOTA's ``ResultMerge``).

A patch written by :mod:`DOTA_devkit.split` is named ``<scene>__<rate>__<left>___<up>``: the
scene was resized by ``rate`` and the patch cut at ``(left, up)`` of the resized scene. A patch
polygon maps back to the scene with ``x = (x' + left) / rate``, ``y = (y' + up) / rate``. Overlapping
windows (and several rates) see the same object more than once, so each class of each scene then
goes through greedy rotated NMS (:func:`DOTA_devkit.geometry.rotated_nms`): a detection is dropped
when its polygon IoU with a kept, higher-scoring one is greater than ``nms_thresh`` (default 0.1,
the original's value).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from .geometry import rotated_nms
from .task1 import ClassDetections

__all__ = ["parse_patch_name", "patch_name", "format_rate", "patch_to_scene", "merge_detections", "scene_ids"]

logger = logging.getLogger(__name__)

# <scene>__<rate>__<left>___<up>; the scene id may itself contain "__" (greedy match).
_PATCH_RE = re.compile(r"^(?P<scene>.+)__(?P<rate>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)__"
                       r"(?P<left>[0-9]+)___(?P<up>[0-9]+)$")


def format_rate(rate: float) -> str:
    """The rate as DOTA's ImgSplit writes it (``str(rate)`` of the number it was given, called with
    ``1`` or ``0.5``): ``1``, ``2``, ``0.5``, ``1.5``."""
    r = float(rate)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"rate must be a positive number, got {rate!r}")
    return str(int(r)) if r.is_integer() else repr(r)


def patch_name(scene_id: str, rate: float, left: int, up: int) -> str:
    """``<scene>__<rate>__<left>___<up>``, e.g. ``P0001__1__0___0``, ``P0001__0.5__412___824``."""
    if left < 0 or up < 0:
        raise ValueError(f"patch offsets must be >= 0, got left={left}, up={up}")
    return f"{scene_id}__{format_rate(rate)}__{int(left)}___{int(up)}"


def parse_patch_name(name: str) -> tuple[str, float, int, int]:
    """``(scene_id, rate, left, up)`` from a patch name (accepts ``1`` and ``1.0`` alike).

    Raises:
        ValueError: the name does not follow ``<scene>__<rate>__<left>___<up>``.
    """
    m = _PATCH_RE.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a DOTA patch name '<scene>__<rate>__<left>___<up>' "
                         "(e.g. P0001__1__0___0)")
    rate = float(m["rate"])
    if rate <= 0:
        raise ValueError(f"{name!r}: rate must be positive")
    return m["scene"], rate, int(m["left"]), int(m["up"])


def patch_to_scene(polygons: NDArray[np.float64], rate: float, left: int, up: int) -> NDArray[np.float64]:
    """Map ``(N, 8)`` patch polygons to scene coordinates: ``((x + left) / rate, (y + up) / rate)``."""
    p = np.asarray(polygons, dtype=np.float64).reshape(-1, 8)
    offset = np.tile(np.array([left, up], dtype=np.float64), 4)
    return (p + offset) / float(rate)


def _merge_class(dets: ClassDetections, nms_thresh: float,
                 cache: dict[str, tuple[str, float, int, int]]) -> ClassDetections:
    n = len(dets)
    if n == 0:
        return ClassDetections.empty()
    parsed = []
    for name in dets.image_ids:
        p = cache.get(name)
        if p is None:
            p = cache[name] = parse_patch_name(name)
        parsed.append(p)
    rates = np.array([p[1] for p in parsed])
    offsets = np.array([[p[2], p[3]] for p in parsed], dtype=np.float64)
    polys = (dets.polygons + np.tile(offsets, (1, 4))) / rates[:, None]  # patch_to_scene, row-wise
    scene_names: list[str] = []
    scene_of: dict[str, int] = {}
    scene_idx = np.empty(n, dtype=np.int64)
    for i, p in enumerate(parsed):
        k = scene_of.setdefault(p[0], len(scene_names))
        if k == len(scene_names):
            scene_names.append(p[0])
        scene_idx[i] = k
    order = np.argsort(scene_idx, kind="stable")
    bounds = np.searchsorted(scene_idx[order], np.arange(len(scene_names) + 1))
    keep_parts = []
    for k in range(len(scene_names)):
        idx = order[bounds[k]:bounds[k + 1]]
        keep_parts.append(idx[rotated_nms(polys[idx], dets.scores[idx], nms_thresh)])
    keep = np.concatenate(keep_parts)
    return ClassDetections([scene_names[scene_idx[i]] for i in keep], dets.scores[keep], polys[keep])


def merge_detections(
    patch_dets: Mapping[str, ClassDetections], nms_thresh: float = 0.1
) -> dict[str, ClassDetections]:
    """Scene-level detections from patch-level ones (module docstring).

    Args:
        patch_dets: ``{class: ClassDetections}`` whose image ids are patch names.
        nms_thresh: rotated-NMS IoU threshold per class and scene.
    Returns:
        ``{class: ClassDetections}`` with scene ids, scenes in order of first appearance and
        detections by decreasing score within a scene. Every input class is present.
    Raises:
        ValueError: an image id is not a patch name.
    """
    if not 0.0 <= nms_thresh <= 1.0:
        raise ValueError(f"nms_thresh must be in [0, 1], got {nms_thresh}")
    cache: dict[str, tuple[str, float, int, int]] = {}
    out = {name: _merge_class(dets, nms_thresh, cache) for name, dets in patch_dets.items()}
    before = sum(len(d) for d in patch_dets.values())
    after = sum(len(d) for d in out.values())
    logger.info("merged %d patch detection(s) from %d patch(es) into %d scene detection(s) (NMS %.2f)",
                before, len(cache), after, nms_thresh)
    return out


def scene_ids(names: Sequence[str]) -> list[str]:
    """Distinct scene ids of patch names, in order of first appearance."""
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(parse_patch_name(name)[0], None)
    return list(seen)
