"""Image sets: the train / val / test split files of a DOTA-format data set, stratified so that every
class is evaluated. (Not to be confused with :mod:`DOTA_devkit.split`, which cuts scenes into patches.)

Writes ``trainval.txt``, ``val.txt`` and ``test.txt`` (one image id per line: the image file name
without suffix) in the data set folder or another one (a read-only data set),
which :class:`bbavectors.data.dataset.DotaDataset` reads (``split=<path to the file>``).
The three splits are **disjoint**: ``trainval`` is what the model trains on, ``val`` and ``test``
are held out (``test.txt`` is written empty with ``test=0``, so a stale file never overlaps).

Algorithm (:func:`make_image_sets`), deterministic for a seed (image ids are sorted first):

1. The ids are shuffled once with ``numpy.random.default_rng(seed)``; that order breaks every tie.
2. For ``val``, then ``test``: **coverage**. While some class is not yet in the split and still has
   at least 2 images left in the pool (so training keeps one), take the pool image that brings the
   most such classes, among images whose every class keeps an image in the pool (greedy set cover).
3. **Fill** to ``round(fraction * n)`` images (at least 1 when the fraction is > 0), in shuffled
   order, preferring images whose removal leaves every class in the pool; only when those run out
   are the others taken, so the requested size always holds. Coverage may need more images than
   the fraction gives (few images, many classes): then the split is larger than requested.
4. What is left is ``trainval``.

A class is *present* in an image when it has a non-difficult object there (DOTA's evaluation
ignores difficult objects, so a split holding only difficult ones cannot score that class).
Images without a label file are background images: they go into the splits like any other.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .image_io import IMAGE_EXTENSIONS, list_images
from .labels import LabelReport, read_dota_label

__all__ = [
    "IMAGE_SET_NAMES",
    "read_split_file",
    "ImageSetResult",
    "image_class_counts",
    "make_image_sets",
    "write_image_set_files",
    "format_image_set_table",
    "make_image_set_files",
]

logger = logging.getLogger(__name__)

#: Split file stems, in the order they are written and shown.
IMAGE_SET_NAMES: tuple[str, ...] = ("trainval", "val", "test")


def read_split_file(path: str | Path) -> list[str]:
    """Image ids of a split file, the one reader of training, conversion and evaluation.

    One id per line; blank lines and ``#`` comments (whole or trailing) are skipped. A path or a file
    name (``images/P0001.png``, ``P0001.txt``) is reduced to its stem, ``\\`` read as ``/``; duplicates
    are kept once (first occurrence order) and logged. An empty file gives an empty list.
    """
    path = Path(path)
    ids: list[str] = []
    seen: set[str] = set()
    duplicates = 0
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            item = line.split("#", 1)[0].strip()
            if not item:
                continue
            normalized = item.replace("\\", "/")
            if "/" in normalized or Path(normalized).suffix.lower() in (*IMAGE_EXTENSIONS, ".txt"):
                item = Path(normalized).stem
            if item in seen:
                duplicates += 1
                continue
            seen.add(item)
            ids.append(item)
    if duplicates:
        logger.warning("%s: %d duplicate image id(s) ignored", path, duplicates)
    return ids


@dataclass
class ImageSetResult:
    """Splits of one data set and what they hold."""

    splits: dict[str, list[str]]  # split name -> sorted image ids
    image_classes: dict[str, Counter[str]]  # image id -> non-difficult objects per class
    report: LabelReport

    def table(self, classes: Sequence[str] | None = None) -> str:
        return format_image_set_table(self.image_classes, self.splits, classes)


def image_class_counts(
    data_dir: str | Path,
    image_dir: str = "images",
    label_dir: str = "labelTxt",
    classes: Sequence[str] | None = None,
    report: LabelReport | None = None,
) -> dict[str, Counter[str]]:
    """Non-difficult objects per class for every image of a data set.

    Args:
        data_dir: data set folder holding ``image_dir`` and ``label_dir``.
        classes: when given, objects of other classes are reported and skipped.
        report: collects label problems (skipped lines are logged with file and line).
    Returns:
        ``{image id: Counter(class -> objects)}`` for every image; an image without a label file
        gets an empty Counter.
    Raises:
        FileNotFoundError: no image folder or no image in it.
        ValueError: two images share an id (:func:`DOTA_devkit.image_io.list_images`).
    """
    data_dir = Path(data_dir)
    images = list_images(data_dir / image_dir)
    if not images:
        raise FileNotFoundError(f"no images in {data_dir / image_dir}")
    report = report if report is not None else LabelReport()
    labels = data_dir / label_dir
    counts: dict[str, Counter[str]] = {}
    unlabelled = 0
    for image_id in sorted(images):
        path = labels / f"{image_id}.txt"
        if not path.is_file():
            unlabelled += 1
            counts[image_id] = Counter()
            continue
        lf = read_dota_label(path, classes, strict=False, report=report)
        counts[image_id] = Counter(o.class_name for o in lf.objects if o.difficult == 0)
    if unlabelled:
        logger.info("%d of %d image(s) have no label file in %s: split as background images",
                    unlabelled, len(images), labels)
    orphans = len({p.stem for p in labels.glob("*.txt")} - set(images)) if labels.is_dir() else 0
    if orphans:
        logger.warning("%d label file(s) in %s have no image: not in any split", orphans, labels)
    if report.issues:
        logger.warning("labels: %s", report.summary())
    return counts


def _quota(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    return max(1, int(math.floor(n * fraction + 0.5)))


def _check_fractions(n: int, val: float, test: float) -> None:
    for name, f in (("val", val), ("test", test)):
        if not (math.isfinite(f) and 0 <= f < 1):
            raise ValueError(f"{name} fraction must be in [0, 1), got {f}")
    if val + test >= 1:
        raise ValueError(f"val + test = {val + test:g} leaves no training images")
    if _quota(n, val) + _quota(n, test) >= n:
        raise ValueError(f"{n} image(s) are too few for val={val:g} and test={test:g} "
                         "with at least one training image")


class _Pool:
    """Images not yet assigned, in shuffled order, with how many pool images hold each class."""

    def __init__(self, order: list[str], image_classes: Mapping[str, Mapping[str, int]]) -> None:
        self.order = order
        self.present = {i: frozenset(c for c, k in image_classes[i].items() if k > 0) for i in order}
        self.members = set(order)
        self.left: Counter[str] = Counter(c for i in order for c in self.present[i])

    def keeps_all_classes(self, image_id: str) -> bool:
        """True when taking the image leaves every one of its classes in the pool."""
        return all(self.left[c] >= 2 for c in self.present[image_id])

    def take(self, image_id: str) -> None:
        self.members.remove(image_id)
        self.left.subtract(self.present[image_id])

    def remaining(self) -> list[str]:
        return [i for i in self.order if i in self.members]


def _cover_classes(pool: _Pool) -> list[str]:
    chosen: list[str] = []
    covered: set[str] = set()
    while True:
        wanted = {c for c, k in pool.left.items() if k >= 2 and c not in covered}
        best, best_gain = None, 0
        for image_id in pool.remaining():
            gain = len(pool.present[image_id] & wanted)
            if gain > best_gain and pool.keeps_all_classes(image_id):
                best, best_gain = image_id, gain
        if best is None:
            return chosen
        pool.take(best)
        chosen.append(best)
        covered |= pool.present[best]


def _fill(pool: _Pool, count: int) -> list[str]:
    chosen: list[str] = []
    for image_id in pool.remaining():
        if len(chosen) >= count:
            return chosen
        if pool.keeps_all_classes(image_id):
            pool.take(image_id)
            chosen.append(image_id)
    for image_id in pool.remaining():
        if len(chosen) >= count:
            break
        pool.take(image_id)
        chosen.append(image_id)
    return chosen


def make_image_sets(
    image_classes: Mapping[str, Mapping[str, int]],
    val: float = 0.1,
    test: float = 0.0,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Stratified disjoint splits (algorithm in the module docstring).

    Args:
        image_classes: ``{image id: {class: objects}}`` (:func:`image_class_counts`).
        val, test: fractions of the images, each in ``[0, 1)``, summing below 1.
        seed: the same seed and input give the same splits.
    Returns:
        ``{"trainval": ids, "val": ids, "test": ids}``, each sorted.
    Raises:
        ValueError: bad fractions, or too few images to keep one for training.
    """
    ids = sorted(image_classes)
    n = len(ids)
    if n == 0:
        raise ValueError("no images to split")
    _check_fractions(n, val, test)
    rng = np.random.default_rng(seed)
    pool = _Pool([ids[k] for k in rng.permutation(n)], image_classes)
    out: dict[str, list[str]] = {}
    for name, fraction in (("val", val), ("test", test)):
        if fraction <= 0:
            out[name] = []
            continue
        quota = _quota(n, fraction)
        chosen = _cover_classes(pool)
        chosen += _fill(pool, quota - len(chosen))
        if len(chosen) > quota:
            logger.info("%s: %d image(s) instead of %d so that every class is in it",
                        name, len(chosen), quota)
        out[name] = sorted(chosen)
    out["trainval"] = sorted(pool.remaining())
    return {name: out[name] for name in IMAGE_SET_NAMES}


def write_image_set_files(out_dir: str | Path, splits: Mapping[str, Sequence[str]]) -> list[Path]:
    """Write ``<split>.txt`` files (one id per line) atomically in ``out_dir`` (created); returns
    their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, ids in splits.items():
        path = out_dir / f"{name}.txt"
        atomic_write_text(path, "".join(f"{i}\n" for i in ids))
        written.append(path)
    return written


def format_image_set_table(
    image_classes: Mapping[str, Mapping[str, int]],
    splits: Mapping[str, Sequence[str]],
    classes: Sequence[str] | None = None,
) -> str:
    """A text table: per class, images and (non-difficult) objects in each split.

    Classes are listed in ``classes`` order (default: alphabetical), then any other class found.
    """
    names = [s for s in IMAGE_SET_NAMES if s in splits] + [s for s in splits if s not in IMAGE_SET_NAMES]
    found = sorted({c for counts in image_classes.values() for c, k in counts.items() if k > 0})
    order = list(classes or []) + [c for c in found if c not in set(classes or [])]
    width = max([len("class")] + [len(c) for c in order] + [len("all images")])
    col = max(8, *(len(s) for s in names))
    head = (f"{'class':<{width}}  " + " ".join(f"{s:>{col}}" for s in names) + "  |  "
            + " ".join(f"{s:>{col}}" for s in names))
    lines = [f"{'':<{width}}  {'images':<{len(names) * (col + 1) - 1}}  |  objects", head,
             "-" * len(head)]
    for c in order:
        imgs = [sum(1 for i in splits[s] if image_classes[i].get(c, 0) > 0) for s in names]
        objs = [sum(image_classes[i].get(c, 0) for i in splits[s]) for s in names]
        lines.append(f"{c:<{width}}  " + " ".join(f"{v:>{col}}" for v in imgs) + "  |  "
                     + " ".join(f"{v:>{col}}" for v in objs))
    lines.append("-" * len(head))
    totals = [len(splits[s]) for s in names]
    all_objs = [sum(sum(image_classes[i].values()) for i in splits[s]) for s in names]
    lines.append(f"{'all images':<{width}}  " + " ".join(f"{v:>{col}}" for v in totals) + "  |  "
                 + " ".join(f"{v:>{col}}" for v in all_objs))
    return "\n".join(lines)


def make_image_set_files(
    data_dir: str | Path,
    val: float = 0.1,
    test: float = 0.0,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    image_dir: str = "images",
    label_dir: str = "labelTxt",
    write: bool = True,
    out_dir: str | Path | None = None,
) -> ImageSetResult:
    """Count classes, make stratified splits and (with ``write``) write the split files.

    See :func:`image_class_counts` and :func:`make_image_sets` for the arguments; ``out_dir``: where
    the files go (default ``data_dir``).
    """
    report = LabelReport()
    counts = image_class_counts(data_dir, image_dir, label_dir, classes, report)
    splits = make_image_sets(counts, val, test, seed)
    if write:
        write_image_set_files(out_dir if out_dir is not None else data_dir, splits)
    return ImageSetResult(splits, counts, report)
