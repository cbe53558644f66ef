"""HRSC2016 annotation XML -> :class:`~DOTA_devkit.labels.LabelFile`.

HRSC2016 writes one XML per image (root ``<HRSC_Image>``), objects under
``<HRSC_Objects><HRSC_Object>`` with the oriented box as ``mbox_cx, mbox_cy, mbox_w, mbox_h``
(pixels) and ``mbox_ang`` (radians, about ``(-pi/2, pi/2]``), plus an axis-aligned
``box_xmin ... box_ymax``, the bow position ``header_x, header_y`` and ``difficult``.

Angle sense, checked on a real file (``tests/test_hrsc.py``): ``mbox_ang`` turns the box the same
way as :func:`~DOTA_devkit.geometry.obb_to_poly` (positive = clockwise on screen, y down), so the
corners are ``obb_to_poly(mbox_cx, mbox_cy, mbox_w, mbox_h, mbox_ang)``. The axis-aligned
``box_*`` fields cannot tell the sign (a box turned by +a and -a has the same external box); the
bow point does: with this sense it lies at an end of the long axis, with the opposite sign it
does not. The ``box_*`` fields are not tight either: the rotated box may extend beyond them.

Every object becomes class ``ship`` (HRSC2016's level-1 task) unless ``class_map`` maps the
numeric ``Class_ID`` to names. ``Img_Resolution`` (metres per pixel) becomes the label's ``gsd``.
Bad objects are recorded, logged, skipped and counted (``strict=True`` raises), as in
:mod:`DOTA_devkit.labels`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..geometry import obb_to_poly
from ..image_io import index_images
from ..labels import LabelFile, LabelReport
from .common import (
    ConversionReport,
    ReadOptions,
    Sample,
    SourceData,
    find_image,
    first_dir,
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
    child_int,
    child_text,
    element_line,
    parse_xml_file,
    record_issue,
)

__all__ = ["read_hrsc_xml", "read_hrsc_image_size", "read_hrsc_folder"]


def read_hrsc_xml(
    path: str | Path,
    strict: bool = False,
    report: LabelReport | None = None,
    class_name: str = "ship",
    class_map: Mapping[str, str] | None = None,
    classes: Sequence[str] | None = None,
) -> LabelFile:
    """Read one HRSC2016 annotation.

    Args:
        path: the XML file.
        strict: raise :class:`~DOTA_devkit.labels.LabelError` on the first bad object.
        report: accumulates counts and issues (created when None).
        class_name: the class of every object when ``class_map`` is None.
        class_map: ``{Class_ID: name}``; an object whose ID is not in it is ``unknown-class``.
        classes: when given, names outside it are ``unknown-class``.
    Returns:
        ``LabelFile``; ``polygons()`` is ``(N, 8)``, corners clockwise on screen.
    Raises:
        XmlError: unreadable, malformed or unsafe XML, or not an ``<HRSC_Image>``.
    """
    root = parse_xml_file(path)
    if root.tag != "HRSC_Image":
        raise XmlError(f"{path}: not an HRSC2016 annotation (root element <{root.tag}>)")
    report = report if report is not None else LabelReport()
    report.files += 1
    out = LabelFile(imagesource="HRSC2016")
    resolution = child_text(root, "Img_Resolution")
    try:
        gsd = float(resolution) if resolution is not None else math.nan
    except ValueError:
        gsd = math.nan
    out.gsd = gsd if math.isfinite(gsd) and gsd > 0 else None
    known = set(classes) if classes is not None else None
    for index, obj in enumerate(root.iter("HRSC_Object"), 1):
        line = element_line(obj)
        try:
            cx, cy, w, h, ang = (child_float(obj, t) for t in
                                 ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang"))
            if w <= 0 or h <= 0:
                raise FieldError("bad-size", f"mbox size w={w:g} h={h:g} must be positive")
            difficult = child_difficult(obj)
            name = class_name
            if class_map is not None:
                class_id = child_text(obj, "Class_ID")
                if class_id is None or class_id not in class_map:
                    raise FieldError("unknown-class", f"Class_ID {class_id!r} is not in the class map")
                name = class_map[class_id]
        except FieldError as e:
            record_issue(report, strict, path, line, e.kind, f"object {index}: {e}")
            continue
        polygon = obb_to_poly([[cx, cy, w, h, ang]])[0]
        accept_object(out, report, strict, path, line, index, polygon, name, difficult, known)
    return out


def read_hrsc_image_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` from ``Img_SizeWidth`` / ``Img_SizeHeight``; None when absent or invalid."""
    root = parse_xml_file(path)
    try:
        w, h = child_int(root, "Img_SizeWidth"), child_int(root, "Img_SizeHeight")
    except FieldError:
        return None
    return (w, h) if w > 0 and h > 0 else None


def read_hrsc_folder(src: Path, options: ReadOptions, report: ConversionReport) -> SourceData:
    """HRSC2016's ``FullDataSet`` (``Annotations/``, ``AllImages/``) or a folder of its XML.

    Images: ``options.image_dir``, else ``AllImages/``, else beside the XML (by name, then
    ``Img_FileName``). Split files: the ``ImageSets/*.txt`` next to ``src`` or one level up.
    Classes: ``ship``, or the names of ``options.class_map`` in its order.
    """
    xml_dir = src / "Annotations" if (src / "Annotations").is_dir() else src
    image_dir = options.image_dir or first_dir(xml_dir.parent / "AllImages", src / "AllImages") or xml_dir
    index = index_images(image_dir)
    sets = first_dir(src / "ImageSets", xml_dir.parent / "ImageSets", xml_dir.parent.parent / "ImageSets")
    names = tuple(dict.fromkeys(options.class_map.values())) if options.class_map else ("ship",)
    out = SourceData(classes=names, splits=split_files(sets))
    for path in xml_files(xml_dir):
        try:
            labels = read_hrsc_xml(path, options.strict, report.labels, class_map=options.class_map,
                                   classes=options.classes)
            size = read_hrsc_image_size(path)
            file_name = child_text(parse_xml_file(path), "Img_FileName")
        except XmlError as e:
            record_malformed(report, options.strict, path, e, "malformed-xml")
            continue
        out.samples.append(Sample(path.stem, labels, path, find_image(index, path.stem, file_name), size))
    return out
