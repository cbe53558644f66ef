r"""Cut DOTA scenes into square patches with their labels (DOTA's ``ImgSplit``, improved).

Windows
-------
:func:`sliding_windows`: along each axis windows start at ``0, step, 2 step, ...`` with
``step = subsize - gap``; the first window that reaches the border is moved back so that it ends
exactly at the border (``max(length - subsize, 0)``), and sliding stops there. A scene smaller than
``subsize`` gets one window at 0. Every pixel is covered; neighbours overlap by at least ``gap``.
Patches are ``subsize x subsize``: parts outside the scene are padded with zeros (bottom/right).
For each rate of ``rates`` the scene is first resized by that rate (``cv2.INTER_CUBIC``, as DOTA)
and the labels multiplied by it. Patch names follow DOTA_devkit (a contract, parsed back by
:func:`DOTA_devkit.merge.parse_patch_name`): ``<id>__<rate>__<left>___<up>`` with the rate as
DOTA's ``str(rate)`` writes the ``1`` / ``0.5`` it is usually given: ``P0001__1__0___0``,
``P0001__0.5__412___824``.

Labels
------
The label window of a patch is its part inside the scene, ``[left, min(left + subsize, W)] x
[up, min(up + subsize, H)]`` (DOTA uses ``W - 1``, which cuts objects touching the last pixel
column). For each object:

* **entirely inside** (all 4 corners in the window): kept as is, shifted to patch coordinates;
* **cut**: the intersection with the window (shapely) is reduced to 4 corners (below), in the
  object's corner orientation and starting at the corner nearest the object's first corner (DOTA's
  ``choose_best_pointorder_fit_another``). It keeps its ``difficult`` flag when more than
  ``thresh`` (default 0.7) of the object's area is inside the window, else it is marked
  ``difficult 2``, as DOTA does;
* touching the window only along a line or at a point: not in the patch (counted);
* pieces (or whole objects after resizing) under 1 px^2: dropped and counted (the label reader
  would reject them as degenerate).

Every object read is accounted for, per rate (:class:`ObjectLedger`, the summary's ``objects in``
line): it lands in at least one patch, or it is dropped for a named, counted reason: **outside
the image** (no area inside the scene, e.g. a label made for another image size) or **under
1 px^2** (all its pieces inside the scene are smaller). Label lines the reader rejects are counted
in the ``labels:`` line (kind, file and line).

Reducing a cut piece to 4 corners (vertices first cleaned of duplicates; a convex hull when a
non-convex object falls apart into several pieces):

* 4 corners: exact. 3 corners (DOTA drops these): the midpoint of the longest edge is added, so
  the shape and area stay exact.
* 5 or more corners (DOTA merges the shortest edge of 5-gons and drops the rest): the corner whose
  removal changes the area least (the smallest triangle with its neighbours) is removed, repeatedly,
  until 4 remain (Visvalingam simplification). The result uses only original corners, so it stays
  inside the window, and keeps most of the area (a corner clipped off a box costs the small
  triangle at the cut).

Coordinates stay float (DOTA truncates them to int and clamps them to ``[1, subsize]``).

Bad input never stops a run: an unreadable image, a label file without image, an image without
label file (when the source has ``labelTxt/``) and malformed label lines are reported with the
file and counted in the summary; the affected scene (or line) is skipped. Patches are PNG files
written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import shapely
from numpy.typing import NDArray
from tqdm import tqdm

from .image_io import ImageReadError, list_images, read_image_bgr, write_image_atomic
from .labels import MIN_POLYGON_AREA, DotaObject, LabelFile, LabelReport, read_dota_label, write_dota_label
from .merge import format_rate, patch_name

__all__ = [
    "sliding_windows",
    "window_starts",
    "reduce_to_quad",
    "ClipCounts",
    "ObjectLedger",
    "cut_objects",
    "SplitOptions",
    "SceneResult",
    "SplitSummary",
    "split_scene",
    "split_dataset",
]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]


# ----------------------------------------------------------------------------------- windows
def window_starts(length: int, subsize: int, gap: int) -> list[int]:
    """Window starts along one axis of ``length`` pixels (module docstring), ascending."""
    if subsize <= 0 or gap < 0 or gap >= subsize:
        raise ValueError(f"need subsize > 0 and 0 <= gap < subsize, got subsize={subsize}, gap={gap}")
    if length <= 0:
        raise ValueError(f"image side must be positive, got {length}")
    step = subsize - gap
    starts: list[int] = []
    pos = 0
    while True:
        if pos + subsize >= length:
            starts.append(max(length - subsize, 0))
            return starts
        starts.append(pos)
        pos += step


def sliding_windows(height: int, width: int, subsize: int, gap: int) -> list[tuple[int, int]]:
    """Top-left corners ``(left, up)`` of the ``subsize x subsize`` windows covering an image, in
    DOTA's order (columns outer, rows inner), as :mod:`DOTA_devkit.split` cuts them.

    Args:
        height, width: image size in pixels.
        subsize: window side; gap: minimum overlap of neighbouring windows (``0 <= gap < subsize``).
    Returns:
        ``[(left, up), ...]``; the last window of a row/column ends at the border; an image smaller
        than ``subsize`` gives ``[(0, 0)]``.
    """
    lefts = window_starts(width, subsize, gap)
    ups = window_starts(height, subsize, gap)
    return [(left, up) for left in lefts for up in ups]


# ----------------------------------------------------------------------------------- cutting labels
def _signed_area(pts: FloatArray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _triangle_areas(pts: FloatArray) -> FloatArray:
    prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    return 0.5 * np.abs((pts[:, 0] - prev[:, 0]) * (nxt[:, 1] - prev[:, 1])
                        - (nxt[:, 0] - prev[:, 0]) * (pts[:, 1] - prev[:, 1]))


def reduce_to_quad(points: FloatArray) -> FloatArray:
    """Reduce a simple polygon's vertices ``(K, 2)``, ``K >= 3``, to 4 corners ``(4, 2)`` (module
    docstring): smallest-triangle corners removed while more than 4 remain; a triangle gets the
    midpoint of its longest edge. Orientation and vertex order are kept."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, got {len(pts)}")
    while len(pts) > 4:
        pts = np.delete(pts, int(np.argmin(_triangle_areas(pts))), axis=0)
    if len(pts) == 3:
        edges = np.linalg.norm(np.roll(pts, -1, axis=0) - pts, axis=1)
        k = int(np.argmax(edges))
        mid = 0.5 * (pts[k] + pts[(k + 1) % 3])
        pts = np.insert(pts, k + 1, mid, axis=0)
    return pts


def _best_start(quad: FloatArray, reference: FloatArray) -> FloatArray:
    """The cyclic shift of ``quad`` (4, 2) closest to ``reference`` (4, 2) (DOTA's rule)."""
    shifts = [np.roll(quad, -k, axis=0) for k in range(4)]
    dist = [float(np.sum((s - reference) ** 2)) for s in shifts]
    return shifts[int(np.argmin(dist))]


def _clean_ring(geom: shapely.Geometry) -> FloatArray | None:
    """Vertices ``(K, 2)`` of a clipped piece without the closing and repeated points; None when
    the piece has no area."""
    if geom.is_empty or geom.area <= 0:
        return None
    if geom.geom_type != "Polygon":
        polys = [g for g in getattr(geom, "geoms", []) if g.geom_type == "Polygon" and g.area > 0]
        if not polys:
            return None
        geom = shapely.convex_hull(shapely.MultiPolygon(polys)) if len(polys) > 1 else polys[0]
    pts = np.asarray(geom.exterior.coords, dtype=np.float64)[:-1]
    keep = np.any(np.abs(pts - np.roll(pts, 1, axis=0)) > 1e-12, axis=1)
    pts = pts[keep]
    return pts if len(pts) >= 3 else None


@dataclass
class ClipCounts:
    """What happened to the objects of the patches of one or many scenes."""

    whole: int = 0  # entirely inside a patch
    cut: int = 0  # cut by a patch border and kept
    cut_difficult2: int = 0  # of which marked difficult 2 (thresh or less of the area inside)
    cut_triangles: int = 0  # pieces with 3 corners (midpoint added)
    cut_five: int = 0  # pieces with 5 corners (reduced)
    cut_six_plus: int = 0  # pieces with 6 or more corners (reduced)
    touching: int = 0  # only a line or point inside the window: not in the patch
    tiny: int = 0  # pieces or resized objects under 1 px^2: dropped

    def add(self, other: ClipCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class ObjectLedger:
    """Where every object read went, counted once per object and rate (a patch overlap may show an
    object several times; it counts once): ``objects_in == in_patches + outside_image + tiny``."""

    objects_in: int = 0  # objects kept by the label reader, times the number of rates
    in_patches: int = 0  # in at least one patch
    outside_image: int = 0  # no area inside the (resized) scene: in no patch
    tiny: int = 0  # every piece inside the scene under 1 px^2: in no patch

    def add(self, other: ObjectLedger) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def balanced(self) -> bool:
        return self.objects_in == self.in_patches + self.outside_image + self.tiny


def cut_objects(
    objects: Sequence[DotaObject],
    window: tuple[float, float, float, float],
    thresh: float = 0.7,
    counts: ClipCounts | None = None,
    sources: list[int] | None = None,
) -> list[DotaObject]:
    """The labels of one patch (module docstring), in patch coordinates.

    Args:
        objects: scene objects, in the (resized) scene's coordinates.
        window: ``(left, up, right, down)`` label window in the same coordinates.
        thresh: fraction of an object's area that must be inside for a cut piece to keep its
            ``difficult`` flag (else 2).
        counts: accumulates what happened (created when None).
        sources: when given, receives the index in ``objects`` of every object returned.
    Returns:
        objects whose polygons are relative to ``(left, up)``, all inside
        ``[0, right - left] x [0, down - up]``.
    """
    counts = counts if counts is not None else ClipCounts()
    if not objects:
        return []
    left, up, right, down = window
    polys = np.stack([o.polygon for o in objects]).astype(np.float64)
    xs, ys = polys[:, 0::2], polys[:, 1::2]
    inside = (xs.min(1) >= left) & (xs.max(1) <= right) & (ys.min(1) >= up) & (ys.max(1) <= down)
    overlaps = (xs.max(1) >= left) & (xs.min(1) <= right) & (ys.max(1) >= up) & (ys.min(1) <= down)
    shift = np.tile(np.array([left, up], dtype=np.float64), 4)
    out: list[DotaObject] = []
    cut_idx = np.flatnonzero(overlaps & ~inside)
    pieces: dict[int, tuple[shapely.Geometry, float]] = {}
    if len(cut_idx):
        geoms = shapely.polygons(polys[cut_idx].reshape(-1, 4, 2))
        bad = ~shapely.is_valid(geoms)
        if bad.any():  # bow-tie corner orders: use the area the corners enclose
            geoms[bad] = shapely.convex_hull(geoms[bad])
        inter = shapely.intersection(geoms, shapely.box(left, up, right, down))
        for k, i in enumerate(cut_idx.tolist()):
            pieces[i] = (inter[k], float(shapely.area(geoms[k])))
    size = np.array([right - left, down - up] * 4)
    for i, obj in enumerate(objects):
        if inside[i]:
            if abs(_signed_area(polys[i].reshape(4, 2))) < MIN_POLYGON_AREA:
                counts.tiny += 1
                continue
            out.append(DotaObject(polys[i] - shift, obj.class_name, obj.difficult))
            if sources is not None:
                sources.append(i)
            counts.whole += 1
            continue
        if i not in pieces:
            continue
        geom, full_area = pieces[i]
        ring = _clean_ring(geom)
        if ring is None:
            if not geom.is_empty:
                counts.touching += 1
            continue
        if len(ring) == 3:
            counts.cut_triangles += 1
        elif len(ring) == 5:
            counts.cut_five += 1
        elif len(ring) > 5:
            counts.cut_six_plus += 1
        quad = reduce_to_quad(ring)
        original = polys[i].reshape(4, 2)
        if (_signed_area(quad) > 0) != (_signed_area(original) > 0):
            quad = quad[::-1]
        quad = _best_start(quad, original)
        if abs(_signed_area(quad)) < MIN_POLYGON_AREA:
            counts.tiny += 1
            continue
        local = np.clip(quad.reshape(8) - shift, 0.0, size)  # removes 1e-13 overlay noise only
        fraction = float(geom.area) / full_area if full_area > 0 else 0.0
        difficult = obj.difficult if fraction > thresh else 2
        counts.cut += 1
        counts.cut_difficult2 += int(difficult == 2 and obj.difficult != 2)
        out.append(DotaObject(local, obj.class_name, difficult))
        if sources is not None:
            sources.append(i)
    return out


def _count_unplaced(objects: Sequence[DotaObject], placed: set[int], height: int, width: int,
                    ledger: ObjectLedger, scene: str) -> None:
    """Add one rate's objects to ``ledger``: placed, or why not (:class:`ObjectLedger`)."""
    ledger.objects_in += len(objects)
    ledger.in_patches += len(placed)
    missing = [i for i in range(len(objects)) if i not in placed]
    if not missing:
        return
    geoms = shapely.polygons(np.stack([objects[i].polygon for i in missing]).reshape(-1, 4, 2))
    inside = shapely.area(shapely.intersection(shapely.make_valid(geoms), shapely.box(0, 0, width, height)))
    for i, area in zip(missing, inside.tolist()):
        if area > 0:
            ledger.tiny += 1
        else:
            ledger.outside_image += 1
            logger.info("%s: object %d (%s) lies outside the %dx%d image: in no patch", scene, i + 1,
                        objects[i].class_name, width, height)


# ----------------------------------------------------------------------------------- one scene
@dataclass
class SplitOptions:
    """How to split (see the module docstring)."""

    subsize: int = 608
    gap: int = 100
    rates: tuple[float, ...] = (1.0,)
    thresh: float = 0.7
    drop_empty: bool = False
    classes: tuple[str, ...] | None = None  # when given, other classes are reported and skipped

    def __post_init__(self) -> None:
        window_starts(1, self.subsize, self.gap)  # validates subsize and gap
        if not self.rates:
            raise ValueError("rates must not be empty")
        for r in self.rates:
            format_rate(r)
        if not 0.0 <= self.thresh <= 1.0:
            raise ValueError(f"thresh must be in [0, 1], got {self.thresh}")


@dataclass
class SceneResult:
    """What splitting one scene produced (picklable: crosses process boundaries)."""

    scene_id: str
    patches: int = 0
    empty_dropped: int = 0
    counts: ClipCounts = field(default_factory=ClipCounts)
    labels: LabelReport = field(default_factory=LabelReport)
    ledger: ObjectLedger = field(default_factory=ObjectLedger)
    error: str | None = None


def _resize(img: NDArray[np.uint8], rate: float) -> NDArray[np.uint8]:
    if rate == 1.0:
        return img
    return np.asarray(cv2.resize(img, None, fx=rate, fy=rate, interpolation=cv2.INTER_CUBIC), dtype=np.uint8)


def _crop_padded(img: NDArray[np.uint8], left: int, up: int, subsize: int) -> NDArray[np.uint8]:
    crop = img[up:up + subsize, left:left + subsize]
    if crop.shape[0] == subsize and crop.shape[1] == subsize:
        return np.ascontiguousarray(crop)
    out: NDArray[np.uint8] = np.zeros((subsize, subsize) + img.shape[2:], dtype=np.uint8)
    out[:crop.shape[0], :crop.shape[1]] = crop
    return out


def split_scene(
    image_path: str | Path,
    label_path: str | Path | None,
    out_dir: str | Path,
    options: SplitOptions,
) -> SceneResult:
    """Split one scene into ``out_dir/images/*.png`` (+ ``out_dir/labelTxt/*.txt`` when labelled).

    Never raises for bad input: an unreadable image is returned as ``SceneResult.error``; bad label
    lines are in ``SceneResult.labels``.
    """
    image_path = Path(image_path)
    out_dir = Path(out_dir)
    result = SceneResult(image_path.stem)
    try:
        img = read_image_bgr(image_path)
    except ImageReadError as e:
        result.error = str(e)
        return result
    labels: LabelFile | None = None
    if label_path is not None:
        try:
            labels = read_dota_label(label_path, classes=options.classes, report=result.labels)
        except OSError as e:
            result.error = f"{label_path}: cannot read label file ({e})"
            return result
    for rate in options.rates:
        scaled = _resize(img, rate)
        h, w = scaled.shape[:2]
        objects = [DotaObject(o.polygon * rate, o.class_name, o.difficult) for o in labels.objects] \
            if labels is not None else []
        gsd = labels.gsd / rate if labels is not None and labels.gsd is not None else None
        sources: list[int] = []
        for left, up in sliding_windows(h, w, options.subsize, options.gap):
            name = patch_name(result.scene_id, rate, left, up)
            patch_objects: list[DotaObject] = []
            if labels is not None:
                window = (float(left), float(up), float(min(left + options.subsize, w)),
                          float(min(up + options.subsize, h)))
                patch_objects = cut_objects(objects, window, options.thresh, result.counts, sources)
                if options.drop_empty and not patch_objects:
                    result.empty_dropped += 1
                    continue
                write_dota_label(out_dir / "labelTxt" / f"{name}.txt", patch_objects,
                                 labels.imagesource, gsd)
            write_image_atomic(out_dir / "images" / f"{name}.png",
                               _crop_padded(scaled, left, up, options.subsize))
            result.patches += 1
        _count_unplaced(objects, set(sources), h, w, result.ledger, str(label_path))
    return result


# ----------------------------------------------------------------------------------- a data set
@dataclass
class SplitSummary:
    """Totals over a split run, and every problem met."""

    scenes: int = 0
    patches: int = 0
    empty_dropped: int = 0
    counts: ClipCounts = field(default_factory=ClipCounts)
    labels: LabelReport = field(default_factory=LabelReport)
    ledger: ObjectLedger = field(default_factory=ObjectLedger)
    unreadable: list[str] = field(default_factory=list)
    labels_without_image: list[str] = field(default_factory=list)
    images_without_label: list[str] = field(default_factory=list)

    def add(self, r: SceneResult) -> None:
        if r.error is not None:
            self.unreadable.append(r.error)
            return
        self.scenes += 1
        self.patches += r.patches
        self.empty_dropped += r.empty_dropped
        self.counts.add(r.counts)
        self.labels.merge(r.labels)
        self.ledger.add(r.ledger)

    @property
    def num_problems(self) -> int:
        return (len(self.unreadable) + len(self.labels_without_image) + len(self.images_without_label)
                + len(self.labels.issues))

    def format(self, max_listed: int = 20) -> str:
        """A human-readable summary, problems listed with their files."""
        c = self.counts
        lines = [f"split {self.scenes} scene(s) into {self.patches} patch(es)"
                 + (f" ({self.empty_dropped} empty patch(es) dropped)" if self.empty_dropped else "")]
        if self.labels.files:
            lines.append(
                f"objects: {c.whole} whole, {c.cut} cut ({c.cut_difficult2} marked difficult 2); cut pieces "
                f"reduced to 4 corners: {c.cut_triangles} with 3, {c.cut_five} with 5, {c.cut_six_plus} with "
                f"6+; dropped: {c.touching} touching a border only, {c.tiny} under 1 px^2")
            lines.append(f"labels: {self.labels.summary()}")
            g = self.ledger
            lines.append(f"objects in: {g.objects_in} (kept labels x rates) = {g.in_patches} in patches "
                         f"+ {g.outside_image} outside the image + {g.tiny} under 1 px^2 inside it")
        problems = ([f"unreadable: {m}" for m in self.unreadable]
                    + [f"label without image: {p}" for p in self.labels_without_image]
                    + [f"image without label (skipped): {p}" for p in self.images_without_label]
                    + [f"bad label line: {i}" for i in self.labels.issues])
        if problems:
            lines.append(f"problems: {len(self.unreadable)} unreadable image(s), "
                         f"{len(self.labels_without_image)} label(s) without image, "
                         f"{len(self.images_without_label)} image(s) without label, "
                         f"{len(self.labels.issues)} bad label line(s)")
            lines += [f"  - {p}" for p in problems[:max_listed]]
            if len(problems) > max_listed:
                lines.append(f"  ... and {len(problems) - max_listed} more")
        return "\n".join(lines)


def _check_destination(src: Path, dst: Path, image_dir: str, label_dir: str) -> None:
    """Refuse a destination whose patches would land among (or overwrite) the inputs."""
    src_r, dst_r = src.resolve(), dst.resolve()
    if dst_r == src_r:
        raise ValueError(f"--dst {dst} is the source folder: the patches would be written among the "
                         "scenes (and overwrite their label files); choose another folder")
    for sub in (image_dir, label_dir):
        inputs = (src / sub).resolve()
        if dst_r == inputs or inputs in dst_r.parents:
            raise ValueError(f"--dst {dst} is inside the source folder {src / sub}; choose a folder "
                             "outside it")


def split_dataset(
    src: str | Path,
    dst: str | Path,
    options: SplitOptions | None = None,
    workers: int = 1,
    progress: bool = True,
    image_dir: str = "images",
    label_dir: str = "labelTxt",
) -> SplitSummary:
    """Split every scene of ``src/images`` (labels from ``src/labelTxt`` when that folder exists)
    into ``dst/images`` (+ ``dst/labelTxt``).

    Args:
        workers: processes (``1``: in this process).
        progress: show a tqdm bar over scenes.
    Raises:
        FileNotFoundError: no ``src/images`` folder or no image in it.
        ValueError: ``dst`` is ``src`` or inside its image or label folder; two images share an id.
    """
    options = options if options is not None else SplitOptions()
    src, dst = Path(src), Path(dst)
    images_dir = src / image_dir
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {images_dir}")
    _check_destination(src, dst, image_dir, label_dir)
    images = list_images(images_dir)
    labels_dir = src / label_dir
    labelled = labels_dir.is_dir()
    summary = SplitSummary()
    tasks: list[tuple[Path, Path | None]] = []
    if labelled:
        label_files = {p.stem: p for p in sorted(labels_dir.glob("*.txt"))}
        summary.labels_without_image = [str(p) for s, p in label_files.items() if s not in images]
        summary.images_without_label = [str(p) for s, p in images.items() if s not in label_files]
        tasks = [(p, label_files[s]) for s, p in images.items() if s in label_files]
        for path in summary.labels_without_image:
            logger.warning("label file without image: %s", path)
        for path in summary.images_without_label:
            logger.warning("image without label file, skipped: %s", path)
    else:
        tasks = [(p, None) for p in images.values()]
        if options.drop_empty:
            logger.warning("--drop-empty ignored: %s has no label folder", src)
    if not images:
        raise FileNotFoundError(f"no images in {images_dir}")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    if labelled:
        (dst / "labelTxt").mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(tasks), desc="split", unit="scene", disable=not progress)
    try:
        if workers <= 1:
            for image_path, label_path in tasks:
                summary.add(split_scene(image_path, label_path, dst, options))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=min(workers, max(len(tasks), 1))) as pool:
                futures = [pool.submit(split_scene, i, lab, dst, options) for i, lab in tasks]
                for fut in as_completed(futures):
                    summary.add(fut.result())
                    bar.update(1)
    finally:
        bar.close()
    for msg in summary.unreadable:
        logger.warning("skipped scene: %s", msg)
    return summary
