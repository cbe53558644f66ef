r"""CVAT for images 1.1 XML, both ways.

Format (https://docs.cvat.ai/docs/other/xml_format/, "Version 1.1", annotation mode): one
``annotations.xml`` for a task, an ``<image>`` per image::

    <annotations>
      <version>1.1</version>
      <meta><task><labels><label><name>car</name></label></labels></task></meta>
      <image id="0" name="a.jpg" width="640" height="480">
        <box label="car" occluded="0" source="manual" xtl="10" ytl="20" xbr="50" ybr="40"
             rotation="30.00" z_order="0">
          <attribute name="difficult">false</attribute>
        </box>
        <polygon label="car" occluded="0" source="manual" points="1,2;3,4;5,6;7,8" z_order="0"/>
      </image>
    </annotations>

Angle convention (the one place it is stated): ``xtl ytl xbr ybr`` is the box *before* rotation,
``rotation`` is in **degrees, turning about the box centre, clockwise on screen** (y down). CVAT's
own export turns a rotated box into a polygon with
``r = c + [[cos, -sin], [sin, cos]] (p - c)``, ``angle = radians(rotation)``, over the corners
``(xtl, ytl), (xbr, ytl), (xbr, ybr), (xtl, ybr)`` (``RotatedBoxesToPolygons`` in
``cvat/apps/dataset_manager/formats/transformations.py``, github.com/cvat-ai/cvat): that is
:func:`~DOTA_devkit.geometry.obb_to_poly` with ``w = xbr - xtl``, ``h = ybr - ytl``, so the DOTA
corners are its TL, TR, BR, BL.

Read: ``<box>`` (rotated or not) and ``<polygon>`` of exactly 4 points; other shapes
(``polyline``, ``points``, ``mask``, ``cuboid``, ``ellipse``, ``skeleton``, ``tag``; ``<track>`` of
CVAT for video) are reported and skipped. ``<attribute name="difficult">`` (true/false/0/1/2) is the
difficult flag. ``width`` / ``height`` are the declared size.

Write: each DOTA object as a 4-point ``<polygon>`` (exact, corner order kept; the default) or, with
``shape="box"``, as a rotated ``<box>`` of its minimum-area rectangle (``rotation`` in ``[0, 180)``;
rectangles exact, other quadrilaterals approximated and counted).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..geometry import obb_to_poly, poly_area, poly_to_obb
from ..labels import DotaObject, LabelFile, LabelReport
from .common import (
    ConversionReport,
    ReadOptions,
    Sample,
    SourceData,
    find_image,
    merged_index,
    record_malformed,
)
from .xml_io import (
    FieldError,
    XmlError,
    accept_object,
    element_line,
    parse_finite_float,
    parse_xml_file,
    record_issue,
    write_xml,
)

__all__ = [
    "CVAT_SHAPES",
    "CvatImage",
    "CvatAnnotations",
    "cvat_box_to_polygon",
    "polygon_to_cvat_box",
    "read_cvat_xml",
    "CvatImageEntry",
    "build_cvat_xml",
    "write_cvat_xml",
    "read_cvat_export",
]

#: Shapes the writer can emit.
CVAT_SHAPES: tuple[str, ...] = ("polygon", "box")
_SKIPPED_SHAPES = ("polyline", "points", "mask", "cuboid", "ellipse", "skeleton", "tag")
#: A polygon whose area is below this fraction of its minimum-area rectangle is counted as
#: approximated when written as a box.
RECTANGLE_AREA_RATIO = 0.95


@dataclass
class CvatImage:
    """One ``<image>``: its name as written, declared size and objects."""

    name: str
    size: tuple[int, int] | None
    labels: LabelFile
    line: int = 0


@dataclass
class CvatAnnotations:
    images: list[CvatImage] = field(default_factory=list)
    classes: tuple[str, ...] = ()  # the <meta> label list, in its order


def cvat_box_to_polygon(
    xtl: float, ytl: float, xbr: float, ybr: float, rotation_deg: float
) -> NDArray[np.float64]:
    """``(8,)`` corners TL, TR, BR, BL of a CVAT box turned by ``rotation_deg`` (module docstring)."""
    cx, cy, w, h = (xtl + xbr) / 2, (ytl + ybr) / 2, xbr - xtl, ybr - ytl
    return obb_to_poly([[cx, cy, w, h, math.radians(rotation_deg)]])[0]


def polygon_to_cvat_box(polygon: NDArray[np.float64]) -> tuple[float, float, float, float, float]:
    """``(xtl, ytl, xbr, ybr, rotation_deg)`` of a polygon's minimum-area rectangle, rotation in
    ``[0, 180)`` (the long side along the rotated x axis)."""
    cx, cy, w, h, a = poly_to_obb(np.asarray(polygon, dtype=np.float64).reshape(1, 8))[0]
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, math.degrees(a)


def _attr_float(elem: ET.Element, name: str, default: float | None = None) -> float:
    text = elem.get(name)
    if text is None:
        if default is not None:
            return default
        raise FieldError("missing-field", f"attribute {name!r} missing on <{elem.tag}>")
    return parse_finite_float(text, f"attribute {name}")


def _points(text: str | None) -> NDArray[np.float64]:
    if not text:
        raise FieldError("missing-field", "attribute 'points' missing on <polygon>")
    try:
        pts = np.array([[float(v) for v in p.split(",")] for p in text.strip().split(";")], dtype=np.float64)
    except ValueError:
        raise FieldError("malformed", f"points {text[:40]!r} are not 'x,y;x,y;...'") from None
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise FieldError("malformed", f"points {text[:40]!r} are not 'x,y;x,y;...'")
    if not np.isfinite(pts).all():
        raise FieldError("non-finite", "NaN or inf in points")
    if len(pts) != 4:
        raise FieldError("not-4-points", f"polygon of {len(pts)} points (only 4-point polygons are boxes)")
    return pts.reshape(8)


def _difficult(shape: ET.Element) -> int:
    for attr in shape.findall("attribute"):
        if attr.get("name", "").lower() == "difficult":
            text = (attr.text or "").strip().lower()
            value = {"true": 1, "false": 0, "": 0}.get(text)
            if value is None:
                value = int(text) if text in ("0", "1", "2") else -1
            if value < 0:
                raise FieldError("bad-difficult", f"difficult attribute {text!r} is not true/false/0/1/2")
            return value
    return 0


def _shape_polygon(shape: ET.Element) -> NDArray[np.float64]:
    if shape.tag == "box":
        xtl, ytl, xbr, ybr = (_attr_float(shape, k) for k in ("xtl", "ytl", "xbr", "ybr"))
        if xbr <= xtl or ybr <= ytl:
            raise FieldError("bad-size", f"box ({xtl:g}, {ytl:g}, {xbr:g}, {ybr:g}) has no area")
        return cvat_box_to_polygon(xtl, ytl, xbr, ybr, _attr_float(shape, "rotation", 0.0))
    return _points(shape.get("points"))


def _meta_classes(root: ET.Element) -> tuple[str, ...]:
    names: list[str] = []
    for label in root.iterfind("meta/*/labels/label"):
        name = (label.findtext("name") or "").strip()
        if name and name not in names:
            names.append(name)
    return tuple(names)


def read_cvat_xml(
    path: str | Path,
    classes: Sequence[str] | None = None,
    strict: bool = False,
    report: LabelReport | None = None,
) -> CvatAnnotations:
    """Read a CVAT for images 1.1 ``annotations.xml`` (module docstring).

    Args:
        classes: when given, other labels are ``unknown-class`` (skipped).
    Returns:
        one :class:`CvatImage` per ``<image>``, in file order; every object is reported with the
        file, its line and its index inside its image.
    Raises:
        XmlError: unreadable, malformed or unsafe XML, or not an ``<annotations>``.
    """
    root = parse_xml_file(path)
    if root.tag != "annotations":
        raise XmlError(f"{path}: not a CVAT XML (root element <{root.tag}>)")
    report = report if report is not None else LabelReport()
    known = set(classes) if classes is not None else None
    out = CvatAnnotations(classes=_meta_classes(root))
    for track in root.iter("track"):
        record_issue(
            report,
            strict,
            path,
            element_line(track),
            "unsupported-shape",
            "<track> (CVAT for video) is not read: export the task as CVAT for images",
        )
    for image in root.iter("image"):
        report.files += 1
        name = image.get("name", "")
        try:
            w, h = int(_attr_float(image, "width", 0)), int(_attr_float(image, "height", 0))
        except FieldError:
            w = h = 0
        item = CvatImage(name, (w, h) if w > 0 and h > 0 else None, LabelFile(), element_line(image))
        for index, shape in enumerate(list(image), 1):
            line = element_line(shape)
            label = shape.get("label")
            where = f"object {index}" + (f" ({label})" if label else "")
            try:
                if shape.tag in _SKIPPED_SHAPES:
                    raise FieldError(
                        "unsupported-shape", f"<{shape.tag}> is not read (box or 4-point polygon)"
                    )
                if shape.tag not in ("box", "polygon"):
                    raise FieldError("unsupported-shape", f"unknown element <{shape.tag}>")
                if not label:
                    raise FieldError("missing-field", f"<{shape.tag}> without a label")
                if any(c.isspace() for c in label):
                    raise FieldError("bad-class-name", f"label {label!r} contains whitespace (use '-')")
                polygon = _shape_polygon(shape)
                difficult = _difficult(shape)
            except FieldError as e:
                record_issue(report, strict, path, line, e.kind, f"{where} in image {name!r}: {e}")
                continue
            accept_object(item.labels, report, strict, path, line, index, polygon, label, difficult, known)
        out.images.append(item)
    return out


@dataclass
class CvatImageEntry:
    """What the writer needs for one ``<image>``."""

    name: str  # the image file name as CVAT will match it
    size: tuple[int, int]
    objects: Sequence[DotaObject]


def _fmt(v: float, digits: int = 4) -> str:
    s = f"{float(v):.{digits}f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def build_cvat_xml(
    entries: Sequence[CvatImageEntry], classes: Sequence[str], shape: str = "polygon"
) -> tuple[ET.Element, list[tuple[int, int]]]:
    """The ``<annotations>`` tree and the ``(entry, object)`` indices of the objects written as the
    minimum-area box of a non-rectangle (``shape="box"`` only).

    ``difficult`` is written as an ``<attribute name="difficult">`` (declared in the label meta).
    """
    if shape not in CVAT_SHAPES:
        raise ValueError(f"CVAT shape {shape!r} is not one of {CVAT_SHAPES}")
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "size").text = str(len(entries))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for name in classes:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "rectangle" if shape == "box" else "polygon"
        attr = ET.SubElement(ET.SubElement(label, "attributes"), "attribute")
        for tag, text in (
            ("name", "difficult"),
            ("mutable", "False"),
            ("input_type", "checkbox"),
            ("default_value", "false"),
            ("values", "false"),
        ):
            ET.SubElement(attr, tag).text = text
    approximated: list[tuple[int, int]] = []
    for i, entry in enumerate(entries):
        image = ET.SubElement(
            root,
            "image",
            {"id": str(i), "name": entry.name, "width": str(entry.size[0]), "height": str(entry.size[1])},
        )
        for k, obj in enumerate(entry.objects):
            common = {"label": obj.class_name, "source": "manual", "occluded": "0"}
            if shape == "box":
                xtl, ytl, xbr, ybr, rot = polygon_to_cvat_box(obj.polygon)
                rect_area = (xbr - xtl) * (ybr - ytl)
                if poly_area(obj.polygon)[0] < RECTANGLE_AREA_RATIO * rect_area:
                    approximated.append((i, k))
                el = ET.SubElement(
                    image,
                    "box",
                    {
                        **common,
                        "xtl": _fmt(xtl),
                        "ytl": _fmt(ytl),
                        "xbr": _fmt(xbr),
                        "ybr": _fmt(ybr),
                        "rotation": _fmt(rot, 6),
                        "z_order": "0",
                    },
                )
            else:
                pts = np.asarray(obj.polygon, dtype=np.float64).reshape(4, 2)
                el = ET.SubElement(
                    image,
                    "polygon",
                    {**common, "points": ";".join(f"{_fmt(x)},{_fmt(y)}" for x, y in pts), "z_order": "0"},
                )
            ET.SubElement(el, "attribute", {"name": "difficult"}).text = "true" if obj.difficult else "false"
    return root, approximated


def write_cvat_xml(
    path: str | Path, entries: Sequence[CvatImageEntry], classes: Sequence[str], shape: str = "polygon"
) -> list[tuple[int, int]]:
    """Write :func:`build_cvat_xml` atomically; returns the approximated ``(entry, object)`` indices."""
    root, approximated = build_cvat_xml(entries, classes, shape)
    write_xml(path, root)
    return approximated


def read_cvat_export(src: Path, options: ReadOptions, report: ConversionReport) -> SourceData:
    """A CVAT for images export: ``annotations.xml`` (or its folder) with ``images/`` beside it.

    An image is found by its ``name`` under ``options.image_dir``, ``images/`` or the XML's folder,
    then by its stem; its id is the stem of ``name`` (two ``<image>`` with one stem: the second is
    reported as ``duplicate-id`` and skipped). Classes: the ``<meta>`` label list.
    """
    xml = src if src.is_file() else src / "annotations.xml"
    if not xml.is_file():
        raise FileNotFoundError(f"no CVAT annotations.xml at {src}")
    try:
        ann = read_cvat_xml(xml, options.classes, options.strict, report.labels)
    except XmlError as e:
        record_malformed(report, options.strict, xml, e, "malformed-xml")
        return SourceData()
    dirs = [d for d in (options.image_dir, xml.parent / "images", xml.parent) if d is not None]
    index = merged_index(*dirs)
    out = SourceData(classes=ann.classes or None)
    seen: set[str] = set()
    for item in ann.images:
        rel = item.name.replace("\\", "/")
        stem = Path(rel).stem
        if stem in seen:
            report.unparsed["duplicate-id"] += len(item.labels.objects)
            report.labels.objects -= len(item.labels.objects)
            record_issue(
                report.labels,
                options.strict,
                xml,
                item.line,
                "duplicate-id",
                f"image {item.name!r}: id {stem!r} used by an earlier <image>",
            )
            continue
        seen.add(stem)
        image = next((d / rel for d in dirs if (d / rel).is_file()), None) or find_image(index, stem, rel)
        out.samples.append(Sample(stem, item.labels, xml, image, item.size))
    return out
