"""Safe XML reading and atomic XML writing, shared by the roLabelImg, HRSC2016 and DIOR-R readers.

Parsing goes through :mod:`defusedxml`, which refuses entity declarations (the "billion laughs"
expansion bomb), external entities and external DTDs: such a file is reported as malformed
(:class:`XmlError`), never expanded. Elements remember their source line
(:func:`element_line`) so problems can be reported as ``file:line``.

Problems inside a parsed file (a missing field, a non-number, a degenerate box) are recorded with
:func:`record_issue` in the same :class:`~DOTA_devkit.labels.LabelReport` the labelTxt parser uses,
so one summary covers every format.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from numpy.typing import NDArray

from ..atomic import atomic_path
from ..geometry import poly_area
from ..labels import (
    MAX_ABS_COORDINATE,
    MIN_POLYGON_AREA,
    DotaObject,
    LabelError,
    LabelFile,
    LabelIssue,
    LabelReport,
    is_self_intersecting,
    untangle_rectangle,
)

__all__ = [
    "XmlError",
    "FieldError",
    "parse_xml_file",
    "parse_xml_bytes",
    "element_line",
    "child_text",
    "child_float",
    "child_int",
    "child_difficult",
    "read_voc_size",
    "record_issue",
    "accept_object",
    "write_xml",
]

logger = logging.getLogger(__name__)


class XmlError(ValueError):
    """An XML file that cannot be read, is not well-formed, or declares entities (refused).

    ``line`` is where the parser stopped (0 when unknown).
    """

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


class FieldError(ValueError):
    """A missing or invalid field inside an XML element; ``kind`` is a :class:`LabelIssue` kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _LineElement(ET.Element):
    """An element that knows the line of its start tag (0 when unknown)."""

    sourceline: int = 0


class _LineTreeBuilder(ET.TreeBuilder):
    def __init__(self) -> None:
        super().__init__(element_factory=_LineElement)
        self.expat: Any = None

    def start(self, tag: Any, attrs: Any) -> ET.Element:
        elem = super().start(tag, attrs)
        if self.expat is not None:
            elem.sourceline = int(self.expat.CurrentLineNumber)  # type: ignore[attr-defined]
        return elem


def parse_xml_bytes(data: bytes, source: str = "<xml>") -> ET.Element:
    """Parse XML bytes safely and return the root element.

    Raises:
        XmlError: not well-formed, or declares entities / external references (``source`` named).
    """
    builder = _LineTreeBuilder()
    parser = DefusedXMLParser(target=builder)
    # defusedxml builds on the pure-Python parser, whose expat object tells the current line.
    builder.expat = getattr(parser, "parser", None)
    try:
        parser.feed(data)
        root = parser.close()
    except DefusedXmlException as e:
        raise XmlError(f"{source}: unsafe XML refused ({type(e).__name__}: {e})") from e
    except ET.ParseError as e:
        line = e.position[0] if getattr(e, "position", None) else 0
        raise XmlError(f"{source}: malformed XML ({e})", line) from e
    if not isinstance(root, ET.Element):
        raise XmlError(f"{source}: malformed XML (no root element)")
    return root


def parse_xml_file(path: str | Path) -> ET.Element:
    """Read and parse one XML file safely (see :func:`parse_xml_bytes`).

    Raises:
        XmlError: unreadable, malformed or unsafe file; the message names it.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise XmlError(f"{path}: cannot read ({e})") from e
    if not data.strip():
        raise XmlError(f"{path}: malformed XML (empty file)")
    return parse_xml_bytes(data, str(path))


def element_line(elem: ET.Element) -> int:
    """Source line of an element's start tag (0 when it was not parsed by this module)."""
    return int(getattr(elem, "sourceline", 0))


def child_text(elem: ET.Element, tag: str) -> str | None:
    """Stripped text of the first child ``tag``; None when the child is missing or empty."""
    child = elem.find(tag)
    if child is None or child.text is None:
        return None
    text = child.text.strip()
    return text or None


def child_float(elem: ET.Element, tag: str) -> float:
    """Finite float in the first child ``tag``.

    Raises:
        FieldError: kind ``missing-field`` (absent or empty), ``malformed`` (not a number) or
            ``non-finite`` (NaN, inf).
    """
    text = child_text(elem, tag)
    if text is None:
        raise FieldError("missing-field", f"<{tag}> missing or empty in <{elem.tag}>")
    return parse_finite_float(text, f"<{tag}>")


def parse_finite_float(text: str, what: str) -> float:
    """``float(text)``; FieldError ``malformed`` (not a number) or ``non-finite`` naming ``what``."""
    try:
        value = float(text)
    except ValueError:
        raise FieldError("malformed", f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise FieldError("non-finite", f"{what} is {text!r}")
    return value


def child_int(elem: ET.Element, tag: str, default: int | None = None) -> int:
    """Integer in the first child ``tag`` (``"1.0"`` accepted); ``default`` when missing.

    Raises:
        FieldError: kind ``missing-field`` (absent, no default) or ``malformed``.
    """
    text = child_text(elem, tag)
    if text is None:
        if default is None:
            raise FieldError("missing-field", f"<{tag}> missing or empty in <{elem.tag}>")
        return default
    try:
        value = float(text)
    except ValueError:
        raise FieldError("malformed", f"<{tag}> {text!r} is not an integer") from None
    if not value.is_integer():
        raise FieldError("malformed", f"<{tag}> {text!r} is not an integer")
    return int(value)


def child_difficult(elem: ET.Element, tag: str = "difficult") -> int:
    """The difficult flag of an object: 0, 1 or 2; 0 when missing.

    Raises:
        FieldError: kind ``bad-difficult`` for anything else.
    """
    try:
        value = child_int(elem, tag, default=0)
    except FieldError as e:
        raise FieldError("bad-difficult", str(e)) from None
    if value not in (0, 1, 2):
        raise FieldError("bad-difficult", f"difficult flag {value} is not 0, 1 or 2")
    return value


def read_voc_size(root: ET.Element) -> tuple[int, int, int] | None:
    """``(width, height, depth)`` of a Pascal-VOC-style ``<size>``; None when absent or invalid
    (a zero size, as some tools write when they could not open the image, counts as absent)."""
    size = root.find("size")
    if size is None:
        return None
    try:
        w, h = child_int(size, "width"), child_int(size, "height")
        depth = child_int(size, "depth", default=3)
    except FieldError:
        return None
    if w <= 0 or h <= 0:
        return None
    return w, h, depth


def record_issue(
    report: LabelReport, strict: bool, path: str | Path, line: int, kind: str, message: str
) -> None:
    """Record a skipped object or file in ``report`` and log it; raise instead when ``strict``.

    Raises:
        LabelError: when ``strict``, naming file, line and problem.
    """
    issue = LabelIssue(str(path), line, kind, message)
    if strict:
        raise LabelError(str(issue))
    report.issues.append(issue)
    logger.warning("skipped: %s", issue)


def accept_object(
    labels: LabelFile,
    report: LabelReport,
    strict: bool,
    path: str | Path,
    line: int,
    index: int,
    polygon: NDArray[np.float64],
    class_name: str,
    difficult: int,
    known: set[str] | None,
) -> bool:
    """Append one parsed object to ``labels`` unless its class is unknown or its polygon degenerate
    (then recorded as ``unknown-class`` / ``degenerate`` with file, line and 1-based object index).

    Args:
        polygon: ``(8,)`` corners.
        known: the class list as a set; None accepts every name.
    Returns:
        True when the object was kept (and counted in ``report``).
    """
    if known is not None and class_name not in known:
        record_issue(report, strict, path, line, "unknown-class",
                     f"object {index}: class {class_name!r} is not in the class list ({len(known)} classes)")
        return False
    coords = [float(v) for v in np.asarray(polygon, dtype=np.float64).reshape(8)]
    # The same rules as the DOTA label parser, so a converted file never holds what it would refuse.
    if not all(math.isfinite(v) for v in coords):
        record_issue(report, strict, path, line, "non-finite",
                     f"object {index} ({class_name}): NaN or inf corner")
        return False
    if max(abs(v) for v in coords) > MAX_ABS_COORDINATE:
        record_issue(report, strict, path, line, "out-of-range",
                     f"object {index} ({class_name}): corner beyond {MAX_ABS_COORDINATE:g} px")
        return False
    if is_self_intersecting(coords):
        untangled = untangle_rectangle(coords)
        if untangled is None:
            record_issue(report, strict, path, line, "self-intersecting",
                         f"object {index} ({class_name}): corners cross, no order of them is a rectangle")
            return False
        coords = untangled
        repair = LabelIssue(str(path), line, "bow-tie", f"object {index}: rectangle corners reordered")
        report.repairs.append(repair)
    polygon = np.asarray(coords, dtype=np.float64)
    area = float(poly_area(polygon)[0])
    if area < MIN_POLYGON_AREA:
        record_issue(report, strict, path, line, "degenerate",
                     f"object {index} ({class_name}): area {area:.3g} px^2 < {MIN_POLYGON_AREA}")
        return False
    labels.objects.append(DotaObject(np.asarray(polygon, dtype=np.float64).reshape(8), class_name, difficult))
    report.objects += 1
    report.per_class[class_name] += 1
    return True


def write_xml(path: str | Path, root: ET.Element) -> None:
    """Write an element tree as indented UTF-8 XML, atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tree = ET.ElementTree(root)
    ET.indent(tree, space="  ")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        tree.write(f, encoding="utf-8", xml_declaration=False)
        f.write(b"\n")
