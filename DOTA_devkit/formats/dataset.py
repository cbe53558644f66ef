"""Folder conversion between the DOTA layout and the formats of :mod:`DOTA_devkit.formats`.

:func:`read_source` turns a data set in any readable format into :class:`~.common.Sample` s (one
image and its labels each, pixels, corners as the format gives them), its own class list and its
split files; :func:`convert_dataset` checks every image (readable, size as declared) and writes the
target: ``dota`` (``images/``, ``labelTxt/``, ``classes.txt``, split files), ``rolabelimg``,
``yolo-obb`` (:func:`dota_to_yolo_obb`) or ``cvat``. Every object read is written or reported
(:class:`~.common.ConversionReport`).

Where each format expects its files (``src``):

* ``dota``: a folder with ``labelTxt/`` and ``images/`` (or a labelTxt folder, images in
  ``../images``); split files are the ``*.txt`` id lists beside them (``trainval.txt`` ...).
* ``rolabelimg``: a folder of ``*.xml``, images beside them or in ``image_dir``.
* ``hrsc``: HRSC2016's ``FullDataSet`` (``Annotations/``, ``AllImages/``) or a folder of XML; split
  files from an ``ImageSets/`` folder next to it or above it.
* ``dior``: DIOR-R's root (``Annotations/Oriented Bounding Boxes/``, ``JPEGImages-trainval/``,
  ``JPEGImages-test/``, ``ImageSets/Main/``) or a folder of XML.
* ``yolo-obb``: a data set YAML, or a folder holding one (``data.yaml`` first), or a folder with
  ``images/`` and ``labels/`` (class names then from ``classes``).
* ``labelme``: a folder of ``*.json`` (``imagePath`` relative to each).
* ``cvat``: ``annotations.xml`` or the folder of a CVAT for images export (``images/`` inside).
* ``task1``: a folder of ``Task1_<class>.txt`` detections (images from ``image_dir``); detections
  scoring below ``min_score`` are left out (counted), to review the rest as pre-annotations.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..classes import KNOWN_CLASS_LISTS, load_class_list, write_class_file
from ..geometry import poly_area, poly_to_obb
from ..image_io import index_images
from ..labels import DotaObject, LabelFile, LabelIssue, read_dota_label, write_dota_label
from ..task1 import Task1ReadReport, read_task1_dir
from .common import (
    DEFAULT_WORKERS,
    FILE_KINDS,
    IMAGE_MODES,
    ConversionReport,
    ReadOptions,
    Sample,
    SourceData,
    check_image,
    image_sizes,
    place_image,
    read_split_file,
    split_files,
)
from .cvat import CVAT_SHAPES, CvatImageEntry, read_cvat_export, write_cvat_xml
from .dior import read_dior_folder
from .hrsc import read_hrsc_folder
from .labelme import read_labelme_folder
from .rolabelimg import RECTANGLE_AREA_RATIO, read_rolabelimg_folder, write_rolabelimg_xml
from .yolo_obb import read_yolo_obb_dataset, write_data_yaml, write_image_list, write_yolo_obb_labels

__all__ = [
    "READ_FORMATS",
    "WRITE_FORMATS",
    "read_source",
    "read_class_map",
    "decode_sizes",
    "convert_dataset",
    "dota_to_yolo_obb",
]

logger = logging.getLogger(__name__)

READ_FORMATS: tuple[str, ...] = ("dota", "rolabelimg", "hrsc", "dior", "yolo-obb", "labelme", "cvat", "task1")
WRITE_FORMATS: tuple[str, ...] = ("dota", "rolabelimg", "yolo-obb", "cvat")
#: Detections below this score are not turned into pre-annotations (task1 input).
DEFAULT_MIN_SCORE = 0.3


# ----------------------------------------------------------------------------------- helpers
def read_class_map(path: str | Path) -> dict[str, str]:
    """``{class id: name}`` from lines ``<id> <name>`` (HRSC2016's ``Class_ID`` to names).

    Raises:
        ValueError: a line without exactly two fields (file and line named).
    """
    out: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected '<class id> <name>', got {line!r}")
        out[parts[0]] = parts[1]
    if not out:
        raise ValueError(f"{path}: class map is empty")
    return out


# ----------------------------------------------------------------------------------- readers
def _read_dota(src: Path, o: ReadOptions, report: ConversionReport) -> SourceData:
    label_dir = src / "labelTxt" if (src / "labelTxt").is_dir() else src
    root = src if label_dir != src else src.parent
    index = index_images(o.image_dir or root / "images")
    out = SourceData(splits=split_files(root))
    if (root / "classes.txt").is_file():
        out.classes = load_class_list(root / "classes.txt")
    for path in sorted(label_dir.glob("*.txt")):
        labels = read_dota_label(path, o.classes, o.strict, report.labels)
        out.samples.append(Sample(path.stem, labels, path, index.get(path.stem)))
    labelled = {s.image_id for s in out.samples}
    for stem, image in index.items():
        if stem not in labelled:
            out.images_without_labels.append(stem)
            out.samples.append(Sample(stem, LabelFile(), image, image))
    return out


def _read_task1(src: Path, o: ReadOptions, report: ConversionReport) -> SourceData:
    if o.image_dir is None:
        raise ValueError(
            "task1 input needs the images (--images DIR): their sizes and files go into the output"
        )
    t1 = Task1ReadReport()
    dets = read_task1_dir(src, o.classes, o.strict, t1)
    for issue in t1.issues:
        report.labels.issues.append(LabelIssue(issue.path, issue.line, "malformed", issue.message))
    index = index_images(o.image_dir)
    per_image: dict[str, list[DotaObject]] = defaultdict(list)
    for name, d in dets.items():
        report.labels.objects += len(d)
        keep = d.scores >= o.min_score
        report.dropped["below-min-score"] += int((~keep).sum())
        for i in np.flatnonzero(keep):
            per_image[d.image_ids[i]].append(DotaObject(d.polygons[i], name, 0))
            report.labels.per_class[name] += 1
    out = SourceData(classes=tuple(dets) or None)
    for stem in sorted(set(index) | set(per_image)):
        if stem not in per_image:
            out.images_without_labels.append(stem)
        out.samples.append(Sample(stem, LabelFile(per_image.get(stem, [])), src, index.get(stem)))
    if report.dropped["below-min-score"]:
        logger.info(
            "%d detection(s) below --min-score %.2f left out", report.dropped["below-min-score"], o.min_score
        )
    return out


_READERS = {
    "dota": _read_dota,
    "rolabelimg": read_rolabelimg_folder,
    "hrsc": read_hrsc_folder,
    "dior": read_dior_folder,
    "yolo-obb": read_yolo_obb_dataset,
    "labelme": read_labelme_folder,
    "cvat": read_cvat_export,
    "task1": _read_task1,
}


def read_source(
    fmt: str,
    src: str | Path,
    report: ConversionReport,
    classes: Sequence[str] | None = None,
    image_dir: str | Path | None = None,
    strict: bool = False,
    class_map: Mapping[str, str] | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
    workers: int = DEFAULT_WORKERS,
) -> SourceData:
    """Read a data set in format ``fmt`` (module docstring for the expected layout).

    Args:
        classes: when given, objects of other classes are reported (``unknown-class``) and skipped.
        image_dir: where the images are, when not where the format keeps them.
        class_map: HRSC2016 ``{Class_ID: name}`` (default: every object is ``ship``).
    Raises:
        ValueError: unknown format, or input the format cannot be read from.
        FileNotFoundError: ``src`` missing or holding no annotation file.
    """
    if fmt not in _READERS:
        raise ValueError(f"unknown input format {fmt!r}: use one of {', '.join(READ_FORMATS)}")
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"source not found: {path}")
    o = ReadOptions(
        tuple(classes) if classes is not None else None,
        Path(image_dir) if image_dir else None,
        strict,
        dict(class_map) if class_map else None,
        min_score,
        workers,
    )
    data = _READERS[fmt](path, o, report)
    report.files_read = len(data.samples) + sum(1 for i in report.labels.issues if i.kind in FILE_KINDS)
    return data


def decode_sizes(samples: Sequence[Sample], workers: int = DEFAULT_WORKERS) -> None:
    """Decode the images of ``samples`` in ``workers`` threads and set their ``size`` (an unreadable
    image leaves it None, for :func:`~.common.check_image` to report)."""
    todo = [s for s in samples if s.image is not None and s.size is None]
    for sample, size in zip(todo, image_sizes([s.image for s in todo if s.image is not None], workers)):
        sample.size = size


# ----------------------------------------------------------------------------------- writers
@dataclass
class _Target:
    dst: Path
    classes: tuple[str, ...]
    image_mode: str
    report: ConversionReport
    strict: bool
    cvat_shape: str = "polygon"
    written: list[tuple[Sample, str]] = field(default_factory=list)  # (sample, image file name)


def _image_name(sample: Sample) -> str:
    suffix = sample.image.suffix if sample.image is not None else ".png"
    return f"{sample.image_id}{suffix}"


def _place(t: _Target, sample: Sample, folder: Path) -> str:
    name = _image_name(sample)
    if t.image_mode != "none" and sample.image is not None:
        place_image(sample.image, folder / name, t.image_mode)
        t.report.images_written += 1
    return name


def _write_dota(t: _Target, sample: Sample) -> None:
    write_dota_label(
        t.dst / "labelTxt" / f"{sample.image_id}.txt",
        sample.labels.objects,
        sample.labels.imagesource,
        sample.labels.gsd,
    )
    t.written.append((sample, _place(t, sample, t.dst / "images")))


def _write_rolabelimg(t: _Target, sample: Sample) -> None:
    polys = sample.labels.polygons()
    if len(polys):
        boxes = poly_to_obb(polys)
        for k in np.flatnonzero(poly_area(polys) < RECTANGLE_AREA_RATIO * boxes[:, 2] * boxes[:, 3]):
            t.report.note(
                t.strict,
                sample.source,
                0,
                "approximated",
                f"object {k + 1} ({sample.labels.objects[k].class_name}) is not a rectangle: "
                "written as its minimum-area rectangle",
            )
    name = _place(t, sample, t.dst)
    size = (sample.size[0], sample.size[1], 3) if sample.size else None
    write_rolabelimg_xml(
        t.dst / f"{sample.image_id}.xml",
        sample.labels.objects,
        sample.image_id,
        size,
        str((t.dst / name).resolve()),
    )
    t.written.append((sample, name))


def _write_yolo(t: _Target, sample: Sample) -> None:
    assert sample.size is not None  # checked images only
    clipped = write_yolo_obb_labels(
        t.dst / "labels" / f"{sample.image_id}.txt", sample.labels.objects, t.classes, sample.size
    )
    for k in clipped:
        obj = sample.labels.objects[k]
        t.report.note(
            t.strict,
            sample.source,
            0,
            "clipped",
            f"object {k + 1} ({obj.class_name}) reaches outside the {sample.size[0]}x{sample.size[1]} "
            "image: corners clamped to it (Ultralytics refuses coordinates outside [0, 1])",
        )
    t.written.append((sample, _place(t, sample, t.dst / "images")))


def _write_cvat_entry(t: _Target, sample: Sample) -> None:
    t.written.append((sample, _place(t, sample, t.dst / "images")))


_WRITERS = {
    "dota": _write_dota,
    "rolabelimg": _write_rolabelimg,
    "yolo-obb": _write_yolo,
    "cvat": _write_cvat_entry,
}


def _prepare(fmt: str, dst: Path, image_mode: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    sub = {"dota": ["labelTxt", "images"], "yolo-obb": ["labels", "images"], "cvat": ["images"]}.get(fmt, [])
    for s in sub:
        if s == "images" and image_mode == "none":
            continue
        (dst / s).mkdir(exist_ok=True)


def _finish(
    fmt: str, t: _Target, splits: Mapping[str, Sequence[str]], train_split: str | None, val_split: str | None
) -> None:
    ids = {s.image_id: name for s, name in t.written}
    kept_splits: dict[str, list[str]] = {}
    for split, members in splits.items():
        missing = [i for i in members if i not in ids]
        if missing:
            t.report.note(
                False,
                split,
                0,
                "split-id-not-written",
                f"{len(missing)} id(s) of split {split!r} have no written image (e.g. {missing[0]}): "
                "left out of the split",
            )
        kept_splits[split] = [i for i in members if i in ids]
    if fmt == "dota":
        if t.classes:
            write_class_file(t.dst / "classes.txt", t.classes)
        for split, members in kept_splits.items():
            _write_ids(t.dst / f"{split}.txt", members)
    elif fmt == "yolo-obb":
        _finish_yolo(t, ids, kept_splits, train_split, val_split)
    elif fmt == "cvat":
        entries = [CvatImageEntry(name, s.size or (0, 0), s.labels.objects) for s, name in t.written]
        approx = write_cvat_xml(t.dst / "annotations.xml", entries, t.classes, t.cvat_shape)
        for i, k in approx:
            sample = t.written[i][0]
            t.report.note(
                False,
                sample.source,
                0,
                "approximated",
                f"object {k + 1} ({sample.labels.objects[k].class_name}) is not a rectangle: "
                "written as its minimum-area rotated box",
            )


def _write_ids(path: Path, ids: Sequence[str]) -> None:
    from .yolo_obb import _write_text

    _write_text(path, "".join(f"{i}\n" for i in ids))


def choose_train_val(
    splits: Mapping[str, object], train_split: str | None, val_split: str | None
) -> tuple[str | None, str | None]:
    """The splits YOLO's ``data.yaml`` trains and validates on: as given, else ``trainval`` /
    ``train`` and ``val`` / ``test`` when present, else None (all images).

    Raises:
        ValueError: a given split does not exist.
    """
    train = train_split or next((s for s in ("trainval", "train") if s in splits), None)
    val = val_split or next((s for s in ("val", "test") if s in splits), None)
    for flag, chosen in (("train", train), ("val", val)):
        if chosen is not None and chosen not in splits:
            have = ", ".join(splits) or "none"
            raise ValueError(f"--{flag}-split {chosen!r}: no such split (have: {have})")
    return train, val


def _finish_yolo(
    t: _Target,
    ids: Mapping[str, str],
    splits: Mapping[str, list[str]],
    train_split: str | None,
    val_split: str | None,
) -> None:
    for split, members in splits.items():
        write_image_list(t.dst / f"{split}.txt", [ids[i] for i in members])
    write_image_list(t.dst / "all.txt", list(ids.values()))
    nonempty = {name: members for name, members in splits.items() if members}
    for name in (train_split, val_split):
        if name is not None and name not in nonempty:
            logger.warning("split %r has no written image: Ultralytics cannot use it", name)
    train, val = choose_train_val(
        nonempty,
        train_split if train_split in nonempty else None,
        val_split if val_split in nonempty else None,
    )
    if train is None:
        logger.warning("no train split found: data.yaml trains on all images (all.txt)")
    if val is None:
        logger.warning("no val split found: data.yaml validates on the training images")
    train_file = f"{train}.txt" if train else "all.txt"
    test = "test.txt" if "test" in nonempty and val != "test" else None
    write_data_yaml(
        t.dst / "data.yaml", t.dst, t.classes, train_file, f"{val}.txt" if val else train_file, test
    )


# ----------------------------------------------------------------------------------- driver
def _class_list(spec: str | Path | None) -> tuple[tuple[str, ...] | None, Path | None]:
    """``(given list, file to create)``: a known list name or an existing file is given; a path
    that does not exist yet is created from the names found."""
    if spec is None:
        return None, None
    if str(spec).lower() in KNOWN_CLASS_LISTS or Path(spec).is_file():
        return load_class_list(spec), None
    return None, Path(spec)


def convert_dataset(
    src: str | Path,
    dst: str | Path,
    from_format: str,
    to_format: str = "dota",
    classes: str | Path | None = None,
    image_dir: str | Path | None = None,
    strict: bool = False,
    image_mode: str | None = None,
    splits: Mapping[str, str | Path | Sequence[str]] | None = None,
    train_split: str | None = None,
    val_split: str | None = None,
    class_map: str | Path | Mapping[str, str] | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
    cvat_shape: str = "polygon",
    progress: bool = True,
    workers: int = DEFAULT_WORKERS,
) -> ConversionReport:
    """Convert a data set from ``from_format`` to ``to_format`` (one of them ``dota``, or both).

    Args:
        src: the source (layout per format: module docstring).
        dst: output folder (created).
        classes: a class list name (``dota1.0`` ...) or file: checks the names (unknown ->
            skipped) and fixes the order (YOLO class indices, ``classes.txt``); a file that does not
            exist is created from the names used. Default: the format's own list (YAML names, CVAT
            labels, DIOR-R's 20, ``ship``, ``classes.txt`` beside DOTA labels), else the names found,
            sorted.
        image_mode: ``copy``, ``link`` (hard link), ``symlink`` or ``none``; default ``symlink`` for
            ``yolo-obb``, ``copy`` otherwise.
        splits: extra or replacing splits ``{name: ids file or ids}``; default the source's own.
        train_split, val_split: the splits YOLO's ``data.yaml`` trains / validates on (default
            ``trainval`` else ``train``; ``val`` else ``test``).
        class_map: HRSC2016 ``Class_ID`` to names (a mapping or a ``<id> <name>`` file).
        min_score: task1 input: detections below it are left out (counted).
        cvat_shape: ``polygon`` (exact) or ``box`` (rotated boxes) for ``cvat`` output.
        workers: threads decoding the images (OpenCV releases the GIL while decoding).
    Returns:
        the report: read = written + skipped, for files and objects (``report.balanced()``).
    Raises:
        LabelError: ``strict`` and a bad file, object or image.
        ValueError, FileNotFoundError: unusable arguments or source (one line, names the file).
    """
    if to_format not in WRITE_FORMATS:
        raise ValueError(f"unknown output format {to_format!r}: use one of {', '.join(WRITE_FORMATS)}")
    if "dota" not in (from_format, to_format) and from_format != "task1":
        raise ValueError("one side of a conversion must be dota (convert to DOTA first, then from it)")
    if from_format == to_format == "dota":
        raise ValueError("--from dota needs --to another format")
    mode = image_mode or ("symlink" if to_format == "yolo-obb" else "copy")
    if mode not in IMAGE_MODES:
        raise ValueError(f"image mode {mode!r} is not one of {', '.join(IMAGE_MODES)}")
    if to_format == "cvat" and cvat_shape not in CVAT_SHAPES:
        raise ValueError(f"CVAT shape {cvat_shape!r} is not one of {', '.join(CVAT_SHAPES)}")
    given, create = _class_list(classes)
    cmap = read_class_map(class_map) if isinstance(class_map, (str, Path)) else class_map
    report = ConversionReport()
    data = read_source(from_format, src, report, given, image_dir, strict, cmap, min_score, workers)
    found = sorted({o.class_name for s in data.samples for o in s.labels.objects})
    names = given or data.classes or tuple(found)
    extra = [c for c in found if c not in names]
    if extra:
        logger.warning("class(es) found outside the format's class list, appended: %s", ", ".join(extra))
        names = tuple(names) + tuple(extra)
    report.classes = tuple(names)
    if create is not None and names:
        create.parent.mkdir(parents=True, exist_ok=True)
        write_class_file(create, names)
        logger.info("created class file %s (%d classes)", create, len(names))
    all_splits = dict(data.splits)
    for name, value in (splits or {}).items():
        all_splits[name] = read_split_file(value) if isinstance(value, (str, Path)) else list(value)
    if to_format == "yolo-obb":
        choose_train_val(all_splits, train_split, val_split)  # refuse a wrong name before writing
    dst = Path(dst)
    _prepare(to_format, dst, mode)
    target = _Target(dst, tuple(names), mode, report, strict, cvat_shape)
    decode_sizes(data.samples, workers)
    for sample in tqdm(data.samples, desc=f"{from_format} -> {to_format}", disable=not progress, leave=False):
        if not check_image(sample, report, strict):
            continue
        _WRITERS[to_format](target, sample)
        report.files_written += 1
        report.objects_written += len(sample.labels.objects)
        report.written.append(sample.image_id)
    _finish(to_format, target, all_splits, train_split, val_split)
    if data.images_without_labels:
        logger.info(
            "%d image(s) without labels (written as background images): %s",
            len(data.images_without_labels),
            ", ".join(data.images_without_labels[:5])
            + (" ..." if len(data.images_without_labels) > 5 else ""),
        )
    report.images_without_labels = list(data.images_without_labels)
    if not report.balanced():
        raise AssertionError(f"conversion counts do not add up:\n{report.summary()}")
    return report


def dota_to_yolo_obb(
    src: str | Path,
    dst: str | Path,
    classes: str | Path | None = None,
    splits: Mapping[str, str | Path | Sequence[str]] | None = None,
    train_split: str | None = None,
    val_split: str | None = None,
    image_mode: str = "symlink",
    strict: bool = False,
    progress: bool = False,
) -> ConversionReport:
    """A DOTA folder as an Ultralytics YOLO-OBB data set: ``dst/images/<id>.<ext>`` (symlinks by
    default), ``dst/labels/<id>.txt``, one ``dst/<split>.txt`` image list per split file found in
    ``src`` (``trainval.txt``, ``val.txt`` ...) or given in ``splits``, ``dst/all.txt``, and
    ``dst/data.yaml`` (``path``, ``train``, ``val``, ``names``) that ``YOLO(...).train(data=...)``
    reads. Train/val default to ``trainval``/``train`` and ``val``/``test``.

    See :func:`convert_dataset` for the arguments; the report's counts add up.
    """
    return convert_dataset(
        src,
        dst,
        "dota",
        "yolo-obb",
        classes=classes,
        strict=strict,
        image_mode=image_mode,
        splits=splits,
        train_split=train_split,
        val_split=val_split,
        progress=progress,
    )
