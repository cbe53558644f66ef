"""DIOR-R annotation XML -> :class:`~DOTA_devkit.labels.LabelFile`.

DIOR-R keeps DIOR's Pascal VOC layout (``<annotation>``, ``<size>``, ``<object><name>``) and writes
each oriented box as its 4 corners inside ``<robndbox>``::

    <robndbox>
      <x_left_top>133</x_left_top>       <y_left_top>237</y_left_top>
      <x_right_top>684</x_right_top>     <y_right_top>237</y_right_top>
      <x_right_bottom>684</x_right_bottom> <y_right_bottom>672</y_right_bottom>
      <x_left_bottom>133</x_left_bottom> <y_left_bottom>672</y_left_bottom>
    </robndbox>
    <angle>0</angle>                     <- redundant with the corners, ignored

The corners are read in that order (left-top, right-top, right-bottom, left-bottom) and, where
they turn counter-clockwise on screen, put in clockwise order keeping the first corner
(:func:`~DOTA_devkit.geometry.normalize_corner_order`). A plain ``<bndbox>`` (DIOR's horizontal
boxes) is read as TL, TR, BR, BL. Class names are kept as written (``golffield``,
``Expressway-Service-area`` ...); with a class list (:data:`DIOR_R_CLASSES`, DIOR's 20 classes as its
files spell them) names are matched without regard to case and written as the list spells them
(some re-distributions lower-case them). Bad objects are recorded, logged, skipped and counted
(``strict=True`` raises).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..geometry import normalize_corner_order
from ..image_io import index_images
from ..labels import LabelFile, LabelReport
from .common import (
    ConversionReport,
    ReadOptions,
    Sample,
    SourceData,
    find_image,
    first_dir,
    merged_index,
    record_malformed,
    split_files,
    xml_files,
)
from .xml_io import (
    FieldError,
    XmlError,
    accept_object,
    child_difficult,
    child_float,
    child_text,
    element_line,
    parse_xml_file,
    read_voc_size,
    record_issue,
)

__all__ = ["DIOR_CORNER_TAGS", "DIOR_R_CLASSES", "read_dior_xml", "read_dior_image_size", "read_dior_folder"]

#: DIOR's 20 classes, in its paper's order, spelled as its annotation files spell them.
DIOR_R_CLASSES: tuple[str, ...] = (
    "airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
    "Expressway-Service-area", "Expressway-toll-station", "golffield", "groundtrackfield", "harbor",
    "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle", "windmill",
)

#: The corner tags in polygon order.
DIOR_CORNER_TAGS: tuple[str, ...] = (
    "x_left_top", "y_left_top", "x_right_top", "y_right_top",
    "x_right_bottom", "y_right_bottom", "x_left_bottom", "y_left_bottom",
)


def _polygon(obj: ET.Element) -> NDArray[np.float64]:
    rob = obj.find("robndbox")
    if rob is not None:
        poly = np.array([[child_float(rob, t) for t in DIOR_CORNER_TAGS]])
        return normalize_corner_order(poly)[0]
    box = obj.find("bndbox")
    if box is None:
        raise FieldError("missing-field", "no <robndbox> or <bndbox> element")
    xmin, ymin, xmax, ymax = (child_float(box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
    if xmax <= xmin or ymax <= ymin:
        raise FieldError("bad-size", f"bndbox ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) has no area")
    return np.array([xmin, ymin, xmax, ymin, xmax, ymax, xmin, ymax], dtype=np.float64)


def read_dior_xml(
    path: str | Path,
    classes: Sequence[str] | None = None,
    strict: bool = False,
    report: LabelReport | None = None,
) -> LabelFile:
    """Read one DIOR-R annotation.

    Args:
        path: the XML file.
        classes: when given, names are matched to it ignoring case (and spelled as in it); others
            are reported as ``unknown-class`` and skipped.
        strict: raise :class:`~DOTA_devkit.labels.LabelError` on the first bad object.
        report: accumulates counts and issues (created when None).
    Returns:
        ``LabelFile``; ``polygons()`` is ``(N, 8)``, corners clockwise on screen.
    Raises:
        XmlError: unreadable, malformed or unsafe XML, or not an ``<annotation>``.
    """
    root = parse_xml_file(path)
    if root.tag != "annotation":
        raise XmlError(f"{path}: not a DIOR-R annotation (root element <{root.tag}>)")
    report = report if report is not None else LabelReport()
    report.files += 1
    out = LabelFile()
    known = set(classes) if classes is not None else None
    spelling = {c.lower(): c for c in classes} if classes is not None else {}
    for index, obj in enumerate(root.findall("object"), 1):
        line = element_line(obj)
        try:
            name = child_text(obj, "name")
            if name is None:
                raise FieldError("missing-field", "<name> missing or empty")
            if any(c.isspace() for c in name):
                raise FieldError("bad-class-name", f"class name {name!r} contains whitespace")
            name = spelling.get(name.lower(), name)
            polygon = _polygon(obj)
            difficult = child_difficult(obj)
        except FieldError as e:
            record_issue(report, strict, path, line, e.kind, f"object {index}: {e}")
            continue
        accept_object(out, report, strict, path, line, index, polygon, name, difficult, known)
    return out


def read_dior_image_size(path: str | Path) -> tuple[int, int, int] | None:
    """``(width, height, depth)`` from the XML's ``<size>``; None when absent or invalid."""
    return read_voc_size(parse_xml_file(path))


def read_dior_folder(src: Path, options: ReadOptions, report: ConversionReport) -> SourceData:
    """DIOR-R's root (``Annotations/Oriented Bounding Boxes/``, ``JPEGImages-trainval/``,
    ``JPEGImages-test/``, ``ImageSets/Main/``) or a folder of its XML. Classes: ``options.classes``
    or :data:`DIOR_R_CLASSES`."""
    xml_dir = first_dir(src / "Annotations" / "Oriented Bounding Boxes", src / "Annotations") or src
    root = src if xml_dir != src else src.parent
    if options.image_dir:
        index = index_images(options.image_dir)
    else:
        folders = ("JPEGImages-trainval", "JPEGImages-test", "JPEGImages")
        index = merged_index(*(root / f for f in folders), xml_dir)
    classes = options.classes or DIOR_R_CLASSES
    sets = first_dir(root / "ImageSets" / "Main", root / "ImageSets")
    out = SourceData(classes=classes, splits=split_files(sets))
    for path in xml_files(xml_dir):
        try:
            labels = read_dior_xml(path, classes, options.strict, report.labels)
            size = read_dior_image_size(path)
            file_name = child_text(parse_xml_file(path), "filename")
        except XmlError as e:
            record_malformed(report, options.strict, path, e, "malformed-xml")
            continue
        image = find_image(index, path.stem, file_name)
        out.samples.append(Sample(path.stem, labels, path, image, size[:2] if size else None))
    return out
