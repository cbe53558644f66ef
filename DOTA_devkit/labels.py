"""DOTA labelTxt reading and writing: the one parser everybody uses.

Format (docs/design.md "Formats")::

    imagesource:GoogleEarth            <- optional header lines
    gsd:0.146343590398
    x1 y1 x2 y2 x3 y3 x4 y4 class difficult

``difficult`` is 0, 1 or 2 (DOTA's split tool writes 2 for objects cut by a patch border); when
missing it is 0. Bad lines never crash a long job and are never dropped silently: each problem
(malformed line, non-finite number, unknown class, degenerate polygon of area < 1 px^2) is
recorded in a :class:`LabelReport` with file and line, logged, counted and skipped; with
``strict=True`` the first problem raises :class:`LabelError` instead.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DotaObject",
    "LabelFile",
    "LabelIssue",
    "LabelReport",
    "LabelError",
    "read_dota_label",
    "parse_dota_lines",
    "write_dota_label",
    "format_dota_line",
    "MIN_POLYGON_AREA",
]

logger = logging.getLogger(__name__)

#: Polygons with a smaller area (px^2) are degenerate: reported and skipped.
MIN_POLYGON_AREA = 1.0


class LabelError(ValueError):
    """A label problem met with ``strict=True``; the message names the file and line."""


@dataclass
class DotaObject:
    """One labelled object."""

    polygon: NDArray[np.float64]  # (8,) x1 y1 ... x4 y4
    class_name: str
    difficult: int = 0


@dataclass
class LabelIssue:
    """A skipped label line: where and why."""

    path: str
    line: int
    kind: str  # malformed | non-finite | unknown-class | degenerate | bad-difficult
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}: {self.message}"


@dataclass
class LabelReport:
    """Counts of what was read and what was skipped, across one or many files."""

    files: int = 0
    objects: int = 0
    issues: list[LabelIssue] = field(default_factory=list)
    per_class: Counter[str] = field(default_factory=Counter)

    def skipped(self) -> Counter[str]:
        """Skipped lines by kind of problem."""
        return Counter(i.kind for i in self.issues)

    def merge(self, other: LabelReport) -> None:
        self.files += other.files
        self.objects += other.objects
        self.issues.extend(other.issues)
        self.per_class.update(other.per_class)

    def summary(self) -> str:
        skipped = self.skipped()
        s = f"{self.files} label file(s), {self.objects} object(s) kept"
        if skipped:
            s += ", skipped: " + ", ".join(f"{n} {k}" for k, n in sorted(skipped.items()))
        return s


@dataclass
class LabelFile:
    """The parsed content of one labelTxt file."""

    objects: list[DotaObject] = field(default_factory=list)
    imagesource: str | None = None
    gsd: float | None = None

    def polygons(self) -> NDArray[np.float64]:
        """``(N, 8)`` float64."""
        if not self.objects:
            return np.zeros((0, 8))
        return np.stack([o.polygon for o in self.objects]).astype(np.float64)

    def class_names(self) -> list[str]:
        return [o.class_name for o in self.objects]

    def class_ids(self, classes: Sequence[str]) -> NDArray[np.int64]:
        """``(N,)`` indices into ``classes``; raises for a class not in the list."""
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[o.class_name] for o in self.objects], dtype=np.int64)

    def difficult(self) -> NDArray[np.int64]:
        """``(N,)`` 0, 1 or 2."""
        return np.array([o.difficult for o in self.objects], dtype=np.int64)


def _shoelace_area(c: list[float]) -> float:
    """|area| of one 4-point polygon; plain Python because a numpy call per label line made
    reading DOTA labels the slowest part of evaluation (same formula as geometry.poly_area)."""
    s = 0.0
    for i in range(4):
        j = (i + 1) % 4
        s += c[2 * i] * c[2 * j + 1] - c[2 * j] * c[2 * i + 1]
    return abs(s) / 2.0


def _issue(report: LabelReport, strict: bool, path: str, line: int, kind: str, msg: str) -> None:
    issue = LabelIssue(path, line, kind, msg)
    if strict:
        raise LabelError(str(issue))
    report.issues.append(issue)
    logger.warning("skipped label: %s", issue)


def parse_dota_lines(
    lines: Iterable[str],
    path: str = "<labels>",
    classes: Sequence[str] | None = None,
    strict: bool = False,
    report: LabelReport | None = None,
) -> LabelFile:
    """Parse labelTxt lines (see the module docstring).

    Args:
        lines: text lines (CRLF or LF).
        path: shown in messages.
        classes: when given, objects of other classes are reported as ``unknown-class``.
        strict: raise :class:`LabelError` on the first problem instead of skipping.
        report: accumulates counts and issues (created when None).
    """
    report = report if report is not None else LabelReport()
    report.files += 1
    known = set(classes) if classes is not None else None
    out = LabelFile()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip().lstrip("\ufeff")
        if not line:
            continue
        low = line.lower()
        if low.startswith("imagesource:"):
            out.imagesource = line.split(":", 1)[1].strip()
            continue
        if low.startswith("gsd:"):
            value = line.split(":", 1)[1].strip()
            try:
                out.gsd = float(value)
            except ValueError:
                out.gsd = None  # DOTA files sometimes say "gsd:null"
            continue
        parts = line.split()
        if len(parts) not in (9, 10):
            _issue(report, strict, path, lineno, "malformed",
                   f"expected 'x1 y1 ... x4 y4 class [difficult]' (9 or 10 fields), got {len(parts)}")
            continue
        try:
            coords = [float(v) for v in parts[:8]]
        except ValueError:
            _issue(report, strict, path, lineno, "malformed", f"non-numeric coordinate in {line!r}")
            continue
        if not all(math.isfinite(v) for v in coords):
            _issue(report, strict, path, lineno, "non-finite", f"NaN or inf coordinate in {line!r}")
            continue
        name = parts[8]
        difficult = 0
        if len(parts) == 10:
            try:
                difficult = int(parts[9])
            except ValueError:
                _issue(report, strict, path, lineno, "bad-difficult",
                       f"difficult flag {parts[9]!r} is not 0, 1 or 2")
                continue
            if difficult not in (0, 1, 2):
                _issue(report, strict, path, lineno, "bad-difficult",
                       f"difficult flag {difficult} is not 0, 1 or 2")
                continue
        if known is not None and name not in known:
            _issue(report, strict, path, lineno, "unknown-class",
                   f"class {name!r} is not in the class list ({len(known)} classes)")
            continue
        poly = np.asarray(coords, dtype=np.float64)
        area = _shoelace_area(coords)
        if area < MIN_POLYGON_AREA:
            _issue(report, strict, path, lineno, "degenerate",
                   f"polygon area {area:.3g} px^2 < {MIN_POLYGON_AREA}")
            continue
        out.objects.append(DotaObject(poly, name, difficult))
        report.objects += 1
        report.per_class[name] += 1
    return out


def read_dota_label(
    path: str | Path,
    classes: Sequence[str] | None = None,
    strict: bool = False,
    report: LabelReport | None = None,
) -> LabelFile:
    """Read one labelTxt file; see :func:`parse_dota_lines` for the arguments."""
    path = Path(path)
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        lines = f.read().splitlines()
    fast = _parse_clean_file(lines, classes, report)
    if fast is not None:
        return fast
    return parse_dota_lines(lines, str(path), classes, strict, report)


def _parse_clean_file(
    lines: list[str], classes: Sequence[str] | None, report: LabelReport | None
) -> LabelFile | None:
    """Vectorised parse of a file without any problem; None when any line needs the careful,
    reporting path of :func:`parse_dota_lines` (evaluation reads 50k objects: this is 4x faster)."""
    out = LabelFile()
    rows: list[list[str]] = []
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        head = line[:12].lower()
        if head.startswith("imagesource:"):
            out.imagesource = line.split(":", 1)[1].strip()
            continue
        if head.startswith("gsd:"):
            try:
                out.gsd = float(line.split(":", 1)[1].strip())
            except ValueError:
                out.gsd = None
            continue
        parts = line.split()
        if len(parts) != 10:
            return None
        rows.append(parts)
    if not rows:
        return None
    try:
        coords = np.array([r[:8] for r in rows], dtype=np.float64)
        difficult = np.array([r[9] for r in rows], dtype=np.int64)
    except ValueError:
        return None
    names = [r[8] for r in rows]
    x, y = coords[:, 0::2], coords[:, 1::2]
    xn, yn = x[:, [1, 2, 3, 0]], y[:, [1, 2, 3, 0]]
    area = 0.5 * np.abs((x * yn - xn * y).sum(axis=1))
    if (
        not np.isfinite(coords).all()
        or (area < MIN_POLYGON_AREA).any()
        or not ((difficult >= 0) & (difficult <= 2)).all()
        or (classes is not None and not set(names) <= set(classes))
    ):
        return None
    out.objects = [DotaObject(coords[i], names[i], int(difficult[i])) for i in range(len(rows))]
    if report is not None:
        report.files += 1
        report.objects += len(rows)
        report.per_class.update(names)
    return out


def _fmt(v: float) -> str:
    # Integers stay integers (DOTA's own files); others keep 0.01 px precision without noise.
    r = round(float(v), 3)
    return str(int(r)) if r == int(r) else f"{r:.3f}".rstrip("0").rstrip(".")


def format_dota_line(
    polygon: Sequence[float] | NDArray[np.float64], class_name: str, difficult: int = 0
) -> str:
    """One labelTxt line (no newline); float coordinates kept to 0.001 px."""
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1)
    if poly.shape != (8,):
        raise ValueError(f"a polygon needs 8 numbers, got {poly.shape}")
    if any(c.isspace() for c in class_name) or not class_name:
        raise ValueError(f"class name {class_name!r} must be non-empty without whitespace")
    return " ".join(_fmt(v) for v in poly) + f" {class_name} {int(difficult)}"


def write_dota_label(
    path: str | Path,
    objects: Iterable[DotaObject],
    imagesource: str | None = None,
    gsd: float | None = None,
) -> None:
    """Write a labelTxt file atomically (temporary file + rename), LF line endings."""
    path = Path(path)
    lines = []
    if imagesource is not None:
        lines.append(f"imagesource:{imagesource}")
    if gsd is not None:
        lines.append(f"gsd:{gsd}")
    lines += [format_dota_line(o.polygon, o.class_name, o.difficult) for o in objects]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)
