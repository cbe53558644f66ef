r"""roLabelImg XML <-> DOTA labelTxt, both directions.

roLabelImg (Pascal VOC style) writes one XML per image::

    <annotation>
      <filename>demo</filename>                 <- stem, sometimes with its suffix
      <size><width>512</width><height>290</height><depth>3</depth></size>
      <object>
        <type>robndbox</type> <name>dog</name> <difficult>0</difficult>
        <robndbox><cx>157.0</cx><cy>170.0</cy><w>166.0</w><h>56.0</h><angle>3.039229</angle></robndbox>
      </object>
      <object>
        <type>bndbox</type> <name>dog</name>  <- or no <type>: a plain box
        <bndbox><xmin>241</xmin><ymin>52</ymin><xmax>383</xmax><ymax>107</ymax></bndbox>
      </object>
    </annotation>

Conventions (image coordinates, y down; :mod:`DOTA_devkit.geometry`):

* ``robndbox``: ``cx, cy, w, h`` in pixels, ``angle`` in radians, ``[0, pi)`` as the tool writes
  it (any finite angle is accepted). The tool draws the corners as
  ``c + R(angle) (-w/2, -h/2), (w/2, -h/2), (w/2, h/2), (-w/2, h/2)`` with
  ``R = [[cos, -sin], [sin, cos]]``: a positive angle turns the box **clockwise on screen**.
  That is exactly :func:`~DOTA_devkit.geometry.obb_to_poly`, so the DOTA corners are its TL, TR,
  BR, BL (clockwise on screen for ``w, h > 0``). ``w`` may be smaller than ``h``.
* ``bndbox``: ``xmin ymin xmax ymax`` -> corners ``(xmin, ymin), (xmax, ymin), (xmax, ymax),
  (xmin, ymax)``: TL, TR, BR, BL, clockwise on screen, never self-intersecting.
* Coordinates stay floats (no ``int()`` truncation); ``difficult`` is kept (missing = 0).

DOTA -> roLabelImg: each polygon becomes its minimum-area rectangle
(:func:`~DOTA_devkit.geometry.poly_to_obb`: ``w`` is the long side, ``angle`` in ``[0, pi)``
along ``w``), written as a ``robndbox``. Rectangles survive DOTA -> XML -> DOTA to 0.01 px (the
first corner may change); other quadrilaterals become their minimum-area rectangle (counted).

Bad input is never dropped silently and never crashes a batch: a malformed or unsafe XML
(entity declarations are refused, see :mod:`DOTA_devkit.formats.xml_io`), a missing field, NaN, a zero or
negative size, an unknown class or an XML without its image is recorded in a
:class:`~DOTA_devkit.labels.LabelReport` with file, line and object index, logged, skipped and
counted; ``strict=True`` raises :class:`~DOTA_devkit.labels.LabelError` instead.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from ..classes import read_class_file, write_class_file
from ..geometry import obb_to_poly, poly_area, poly_to_obb
from ..image_io import IMAGE_EXTENSIONS, index_images
from ..labels import (
    DotaObject,
    LabelError,
    LabelFile,
    LabelIssue,
    LabelReport,
    read_dota_label,
    write_dota_label,
)
from .common import (
    ConversionReport,
    ReadOptions,
    Sample,
    SourceData,
    find_image,
    image_size,
    place_image,
    record_malformed,
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
    write_xml,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "RoLabelImgAnnotation",
    "ConversionSummary",
    "robndbox_to_polygon",
    "bndbox_to_polygon",
    "polygons_to_robndboxes",
    "parse_rolabelimg",
    "read_rolabelimg_xml",
    "build_rolabelimg_xml",
    "write_rolabelimg_xml",
    "index_images",
    "find_image",
    "image_size",
    "place_image",
    "convert_rolabelimg_to_dota",
    "convert_dota_to_rolabelimg",
    "read_rolabelimg_folder",
]

logger = logging.getLogger(__name__)

#: Image suffixes looked for beside the labels (the data set accepts the same ones).
#: A DOTA polygon whose area is below this fraction of its minimum-area rectangle is counted as
#: approximated when written as a roLabelImg ``robndbox``.
RECTANGLE_AREA_RATIO = 0.95


@dataclass
class RoLabelImgAnnotation:
    """One parsed roLabelImg XML file."""

    labels: LabelFile
    filename: str | None = None  # <filename>, as written (stem or name)
    size: tuple[int, int, int] | None = None  # (width, height, depth) from <size>


@dataclass
class ConversionSummary:
    """What a folder conversion did; ``report`` holds the counted and skipped objects and files."""

    report: LabelReport = field(default_factory=LabelReport)
    written: list[str] = field(default_factory=list)  # ids of the label files written
    images: int = 0  # images copied or linked
    approximated: int = 0  # non-rectangular polygons written as their min-area rectangle
    classes: tuple[str, ...] = ()
    notes: list[LabelIssue] = field(default_factory=list)  # kept but reported: size-mismatch
    images_without_labels: list[str] = field(default_factory=list)  # --to-xml: image ids with no labelTxt

    def summary(self) -> str:
        s = f"wrote {len(self.written)} file(s), {self.images} image(s); {self.report.summary()}"
        if self.approximated:
            s += f"; {self.approximated} non-rectangular polygon(s) written as min-area rectangles"
        if self.notes:
            s += f"; {len(self.notes)} image(s) whose size differs from the XML's <size> (kept)"
        if self.images_without_labels:
            s += f"; {len(self.images_without_labels)} image(s) without a label file (not written)"
        return s


# ------------------------------------------------------------------------------------- geometry
def robndbox_to_polygon(cx: float, cy: float, w: float, h: float, angle: float) -> NDArray[np.float64]:
    """``(8,)`` corners of a roLabelImg ``robndbox`` (module docstring), clockwise on screen."""
    return obb_to_poly(np.array([[cx, cy, w, h, angle]], dtype=np.float64))[0]


def bndbox_to_polygon(xmin: float, ymin: float, xmax: float, ymax: float) -> NDArray[np.float64]:
    """``(8,)`` corners TL, TR, BR, BL of a plain box (clockwise on screen, not self-intersecting)."""
    return np.array([xmin, ymin, xmax, ymin, xmax, ymax, xmin, ymax], dtype=np.float64)


def polygons_to_robndboxes(polygons: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(N, 8)`` polygons -> ``(N, 5)`` ``(cx, cy, w, h, angle)``: minimum-area rectangles, ``w``
    the long side, ``angle`` in ``[0, pi)`` (what roLabelImg writes)."""
    return poly_to_obb(polygons)


# ---------------------------------------------------------------------------------- XML -> DOTA
def _object_polygon(obj: ET.Element) -> NDArray[np.float64]:
    kind = (child_text(obj, "type") or "").lower()
    if kind not in ("", "robndbox", "bndbox"):
        raise FieldError("malformed", f"unknown <type> {kind!r} (expected robndbox or bndbox)")
    rob = obj.find("robndbox")
    if kind == "robndbox" or (kind == "" and rob is not None):
        if rob is None:
            raise FieldError("missing-field", "<type>robndbox</type> without a <robndbox> element")
        cx, cy, w, h, angle = (child_float(rob, t) for t in ("cx", "cy", "w", "h", "angle"))
        if w <= 0 or h <= 0:
            raise FieldError("bad-size", f"robndbox size w={w:g} h={h:g} must be positive")
        return robndbox_to_polygon(cx, cy, w, h, angle)
    box = obj.find("bndbox")
    if box is None:
        raise FieldError("missing-field", "no <robndbox> or <bndbox> element")
    xmin, ymin, xmax, ymax = (child_float(box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
    if xmax <= xmin or ymax <= ymin:
        raise FieldError("bad-size", f"bndbox ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) has no area")
    return bndbox_to_polygon(xmin, ymin, xmax, ymax)


def _object_name(obj: ET.Element) -> str:
    name = child_text(obj, "name")
    if name is None:
        raise FieldError("missing-field", "<name> missing or empty")
    if any(c.isspace() for c in name):
        # DOTA lines are whitespace separated: such a name cannot be written.
        raise FieldError("bad-class-name", f"class name {name!r} contains whitespace (use '-' instead)")
    return name


def parse_rolabelimg(
    root: ET.Element,
    path: str | Path = "<xml>",
    classes: Sequence[str] | None = None,
    strict: bool = False,
    report: LabelReport | None = None,
) -> RoLabelImgAnnotation:
    """Objects of a parsed roLabelImg ``<annotation>``.

    Args:
        root: the root element (:func:`DOTA_devkit.formats.xml_io.parse_xml_file`).
        path: shown in messages.
        classes: when given, other class names are reported as ``unknown-class`` and skipped.
        strict: raise :class:`LabelError` on the first problem instead of skipping.
        report: accumulates counts and issues (created when None).
    Returns:
        the annotation; ``labels.polygons()`` is ``(N, 8)`` float64, corners clockwise on screen.
    Raises:
        XmlError: the root is not an ``<annotation>``.
    """
    if root.tag != "annotation":
        raise XmlError(f"{path}: not a roLabelImg / Pascal VOC annotation (root element <{root.tag}>)")
    report = report if report is not None else LabelReport()
    report.files += 1
    known = set(classes) if classes is not None else None
    out = RoLabelImgAnnotation(LabelFile(), child_text(root, "filename"), read_voc_size(root))
    for index, obj in enumerate(root.findall("object"), 1):
        line = element_line(obj)
        try:
            name = _object_name(obj)
            polygon = _object_polygon(obj)
            difficult = child_difficult(obj)
        except FieldError as e:
            label = child_text(obj, "name")
            record_issue(report, strict, path, line, e.kind,
                         f"object {index}" + (f" ({label})" if label else "") + f": {e}")
            continue
        accept_object(out.labels, report, strict, path, line, index, polygon, name, difficult, known)
    return out


def read_rolabelimg_xml(
    path: str | Path,
    classes: Sequence[str] | None = None,
    strict: bool = False,
    report: LabelReport | None = None,
) -> RoLabelImgAnnotation:
    """Read one roLabelImg XML file (see :func:`parse_rolabelimg`).

    Raises:
        XmlError: the file is unreadable, malformed, unsafe or not an annotation.
    """
    return parse_rolabelimg(parse_xml_file(path), path, classes, strict, report)


# ---------------------------------------------------------------------------------- DOTA -> XML
def _num(v: float, digits: int) -> str:
    s = f"{float(v):.{digits}f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    elem = ET.SubElement(parent, tag)
    if text is not None:
        elem.text = text
    return elem


def build_rolabelimg_xml(
    objects: Sequence[DotaObject],
    filename: str,
    size: tuple[int, int, int] | None = None,
    folder: str = "",
    image_path: str = "",
) -> ET.Element:
    """A roLabelImg ``<annotation>`` with one ``robndbox`` per object.

    Args:
        objects: DOTA objects; each polygon ``(8,)`` becomes its minimum-area rectangle.
        filename: the image stem (roLabelImg writes the stem).
        size: ``(width, height, depth)`` of the image; omitted from the XML when None.
    """
    root = ET.Element("annotation", {"verified": "no"})
    _sub(root, "folder", folder)
    _sub(root, "filename", filename)
    _sub(root, "path", image_path)
    _sub(_sub(root, "source"), "database", "Unknown")
    if size is not None:
        size_el = _sub(root, "size")
        for tag, v in zip(("width", "height", "depth"), size):
            _sub(size_el, tag, str(int(v)))
    _sub(root, "segmented", "0")
    polys = np.stack([o.polygon for o in objects]) if objects else np.zeros((0, 8))
    boxes = polygons_to_robndboxes(polys)
    for obj, (cx, cy, w, h, angle) in zip(objects, boxes):
        el = _sub(root, "object")
        _sub(el, "type", "robndbox")
        _sub(el, "name", obj.class_name)
        _sub(el, "pose", "Unspecified")
        _sub(el, "truncated", "0")
        _sub(el, "difficult", str(int(obj.difficult)))
        rob = _sub(el, "robndbox")
        # 4 decimals on pixels and 6 on the angle keep corners within 0.002 px up to 4000 px boxes.
        for tag, v, digits in (("cx", cx, 4), ("cy", cy, 4), ("w", w, 4), ("h", h, 4), ("angle", angle, 6)):
            _sub(rob, tag, _num(v, digits))
    return root


def write_rolabelimg_xml(
    path: str | Path,
    objects: Sequence[DotaObject],
    filename: str,
    size: tuple[int, int, int] | None = None,
    image_path: str = "",
) -> None:
    """Write :func:`build_rolabelimg_xml` to ``path`` atomically."""
    path = Path(path)
    write_xml(path, build_rolabelimg_xml(objects, filename, size, path.parent.name, image_path))


# ----------------------------------------------------------------------------------- images


# ------------------------------------------------------------------------------ folder conversion
def _load_classes(classes_file: str | Path | None) -> tuple[str, ...] | None:
    if classes_file is None or not Path(classes_file).exists():
        return None
    return read_class_file(classes_file)


def _save_classes(classes_file: str | Path | None, dst_file: Path, used: tuple[str, ...] | None,
                  found: list[str]) -> tuple[str, ...]:
    """Write the class list beside the output (and create ``classes_file`` when it did not exist).

    A list created from the data is sorted alphabetically: it does not depend on file order.
    """
    names = used if used is not None else tuple(sorted(found))
    if not names:
        logger.warning("no objects kept: no class list written")
        return ()
    if classes_file is not None and used is None:
        Path(classes_file).parent.mkdir(parents=True, exist_ok=True)
        write_class_file(classes_file, names)
        logger.info("created class file %s (%d classes, alphabetical)", classes_file, len(names))
    write_class_file(dst_file, names)
    return names


def convert_rolabelimg_to_dota(
    src: str | Path,
    dst: str | Path,
    classes_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    strict: bool = False,
    link: bool = False,
    labels_only: bool = False,
    progress: bool = True,
) -> ConversionSummary:
    """Convert a folder of roLabelImg XML files into a DOTA data set folder.

    Writes ``dst/labelTxt/<xml stem>.txt``, ``dst/images/<xml stem><suffix>`` (copied, or linked
    with ``link``) and ``dst/classes.txt``.

    Args:
        src: folder of ``*.xml`` files (not recursive).
        dst: output folder (created).
        classes_file: an existing file: names are checked against it (unknown -> skipped);
            a missing file: created from the names found, sorted alphabetically.
        image_dir: where the images are; default ``src`` (roLabelImg saves XML beside them).
        strict: the first problem raises :class:`LabelError` (malformed XML, missing image, bad object).
        labels_only: do not look for images (no ``images/`` written, no ``missing-image`` skips).
    Returns:
        the summary; every skipped file and object is in ``summary.report.issues``.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    xml_files = sorted(p for p in src.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
    if not xml_files:
        raise FileNotFoundError(f"no .xml files in {src}")
    classes = _load_classes(classes_file)
    index = {} if labels_only else index_images(Path(image_dir) if image_dir is not None else src)
    (dst / "labelTxt").mkdir(parents=True, exist_ok=True)
    if not labels_only:
        (dst / "images").mkdir(parents=True, exist_ok=True)
    out = ConversionSummary()
    report = out.report
    for xml_path in tqdm(xml_files, desc="roLabelImg -> DOTA", disable=not progress, leave=False):
        try:
            root = parse_xml_file(xml_path)
            if root.tag != "annotation":
                raise XmlError(f"{xml_path}: not a roLabelImg annotation (root element <{root.tag}>)")
        except XmlError as e:
            message = str(e).removeprefix(f"{xml_path}: ")
            record_issue(report, strict, xml_path, e.line, "malformed-xml", message)
            continue
        image = None
        if not labels_only:
            image = find_image(index, xml_path.stem, child_text(root, "filename"))
            if image is None:
                record_issue(report, strict, xml_path, 0, "missing-image",
                             f"no image {xml_path.stem}.* (or <filename>) in {image_dir or src}")
                continue
        ann = parse_rolabelimg(root, xml_path, classes, strict, report)
        if image is not None and not _image_matches(image, ann, xml_path, strict, out):
            continue
        write_dota_label(dst / "labelTxt" / f"{xml_path.stem}.txt", ann.labels.objects)
        out.written.append(xml_path.stem)
        if image is not None:
            place_image(image, dst / "images" / f"{xml_path.stem}{image.suffix}", "link" if link else "copy")
            out.images += 1
    out.classes = _save_classes(classes_file, dst / "classes.txt", classes, list(report.per_class))
    logger.info("roLabelImg -> DOTA: %s", out.summary())
    return out


def _image_matches(image: Path, ann: RoLabelImgAnnotation, xml_path: Path, strict: bool,
                   out: ConversionSummary) -> bool:
    """Decode the image of an XML: unreadable -> the file is skipped (``unreadable-image``, its
    objects leave the kept count); a size other than ``<size>`` -> a note (strict: an error)."""
    size = image_size(image)
    if size is None:
        out.report.objects -= len(ann.labels.objects)
        for obj in ann.labels.objects:
            out.report.per_class[obj.class_name] -= 1
        out.report.per_class += Counter()  # drop zero counts
        record_issue(out.report, strict, xml_path, 0, "unreadable-image",
                     f"cannot decode image {image} ({len(ann.labels.objects)} object(s) not converted)")
        return False
    if ann.size is not None and size[:2] != ann.size[:2]:
        issue = LabelIssue(str(xml_path), 0, "size-mismatch",
                           f"<size> says {ann.size[0]}x{ann.size[1]}, "
                           f"image {image.name} is {size[0]}x{size[1]}")
        if strict:
            raise LabelError(str(issue))
        out.notes.append(issue)
        logger.warning("note: %s", issue)
    return True


def _dota_label_dir(src: Path) -> Path:
    return src / "labelTxt" if (src / "labelTxt").is_dir() else src


def convert_dota_to_rolabelimg(
    src: str | Path,
    dst: str | Path,
    classes_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    strict: bool = False,
    link: bool = False,
    labels_only: bool = False,
    progress: bool = True,
) -> ConversionSummary:
    """Convert DOTA labelTxt files into roLabelImg XML, with the images beside them.

    Writes ``dst/<id>.xml`` and ``dst/<id><suffix>`` (the image, copied or linked): open ``dst`` in
    roLabelImg to fix the labels, then convert back with :func:`convert_rolabelimg_to_dota`.

    Args:
        src: a data set folder holding ``labelTxt/`` (and ``images/``), or a labelTxt folder.
        dst: output folder (created).
        classes_file: an existing class file checks the names (unknown -> skipped).
        image_dir: default ``src/images``, or ``../images`` beside a labelTxt folder.
        labels_only: write XML without looking for images (no ``<size>``, no ``missing-image`` skips).
    """
    src, dst = Path(src), Path(dst)
    label_dir = _dota_label_dir(src)
    if not label_dir.is_dir():
        raise FileNotFoundError(f"label folder not found: {label_dir}")
    label_files = sorted(p for p in label_dir.iterdir() if p.suffix.lower() == ".txt" and p.is_file())
    if not label_files:
        raise FileNotFoundError(f"no .txt label files in {label_dir}")
    if image_dir is None:
        image_dir = label_dir.parent / "images"
    classes = _load_classes(classes_file)
    index = {} if labels_only else index_images(Path(image_dir))
    dst.mkdir(parents=True, exist_ok=True)
    out = ConversionSummary()
    report = out.report
    for label_path in tqdm(label_files, desc="DOTA -> roLabelImg", disable=not progress, leave=False):
        stem = label_path.stem
        image = None if labels_only else find_image(index, stem)
        size = None
        if not labels_only:
            size = image_size(image) if image is not None else None
            if image is None or size is None:
                why = "no image" if image is None else f"unreadable image {image}"
                record_issue(report, strict, label_path, 0, "missing-image",
                             f"{why} for {stem} in {image_dir}")
                continue
        labels = read_dota_label(label_path, classes, strict, report)
        polys = labels.polygons()
        if len(polys):
            boxes = polygons_to_robndboxes(polys)
            rect_area = boxes[:, 2] * boxes[:, 3]
            out.approximated += int(np.sum(poly_area(polys) < RECTANGLE_AREA_RATIO * rect_area))
        image_name = ""
        if image is not None:
            image_name = f"{stem}{image.suffix}"
            place_image(image, dst / image_name, "link" if link else "copy")
            out.images += 1
        write_rolabelimg_xml(dst / f"{stem}.xml", labels.objects, stem, size,
                             str((dst / image_name).resolve()) if image_name else "")
        out.written.append(stem)
    out.classes = classes if classes is not None else tuple(sorted(report.per_class))
    labelled = {p.stem for p in label_files}
    out.images_without_labels = sorted(i for i in index if i not in labelled)
    for stem in out.images_without_labels:
        logger.warning("%s: image without a label file in %s (not written)", index[stem], label_dir)
    if out.approximated:
        logger.warning("%d polygon(s) were not rectangles (area < %.0f%% of their min-area rectangle); "
                       "written as their min-area rectangle", out.approximated, 100 * RECTANGLE_AREA_RATIO)
    logger.info("DOTA -> roLabelImg: %s", out.summary())
    return out


def read_rolabelimg_folder(src: Path, options: ReadOptions, report: ConversionReport) -> SourceData:
    """Every ``*.xml`` of ``src`` as a :class:`~.common.Sample`; images beside them or in
    ``options.image_dir`` (by the XML's name, then its ``<filename>``); ``<size>`` is the declared size."""
    index = index_images(options.image_dir or src)
    out = SourceData()
    for path in xml_files(src):
        try:
            ann = parse_rolabelimg(parse_xml_file(path), path, options.classes, options.strict, report.labels)
        except XmlError as e:
            record_malformed(report, options.strict, path, e, "malformed-xml")
            continue
        size = ann.size[:2] if ann.size else None
        image = find_image(index, path.stem, ann.filename)
        out.samples.append(Sample(path.stem, ann.labels, path, image, size))
    return out
