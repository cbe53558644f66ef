"""DOTA Task1 result files: one ``Task1_<class>.txt`` per class, one detection per line::

    image_id score x1 y1 x2 y2 x3 y3 x4 y4

(the layout of the official submission example: files at the root of the zip, no header).

Reading keeps the file order of the lines: DOTA's evaluator sorts detections with a non-stable
sort, so the order of equal scores is part of the result. Bad lines (wrong number of fields,
non-numeric or non-finite numbers, bytes that are not UTF-8) are reported with file and line,
logged and skipped; with ``strict=True`` the first one raises :class:`Task1FormatError`. A score
outside ``[0, 1]`` is kept (evaluation only uses the order of the scores) but reported with file
and line in :attr:`Task1ReadReport.warnings`: it usually means swapped columns or logits.
Writing is atomic and keeps every
float exactly (shortest round-trip representation), so that evaluating written files gives the
same numbers as evaluating the detections in memory.
"""

from __future__ import annotations

import io
import logging
import math
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .atomic import atomic_path, atomic_write_text

__all__ = [
    "ClassDetections",
    "Task1Issue",
    "Task1FormatError",
    "Task1ReadReport",
    "task1_file_name",
    "parse_task1_text",
    "read_task1_file",
    "read_task1_dir",
    "write_task1_file",
    "write_task1_dir",
    "zip_task1_dir",
]

logger = logging.getLogger(__name__)

_PREFIX = "Task1_"
_SUFFIX = ".txt"


class Task1FormatError(ValueError):
    """A malformed Task1 line met with ``strict=True``; the message names file and line."""


@dataclass
class Task1Issue:
    """A skipped line of a Task1 file."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Task1ReadReport:
    """What was read and what was skipped, over one or many files."""

    files: int = 0
    detections: int = 0
    issues: list[Task1Issue] = field(default_factory=list)
    #: Lines kept but suspicious (a score outside [0, 1]).
    warnings: list[Task1Issue] = field(default_factory=list)

    def summary(self) -> str:
        s = f"{self.files} Task1 file(s), {self.detections} detection(s)"
        if self.warnings:
            s += f" ({len(self.warnings)} with a score outside [0, 1], kept)"
        if self.issues:
            s += f", {len(self.issues)} bad line(s) skipped"
        return s


class ClassDetections:
    """The detections of one class, in file order.

    Attributes:
        image_ids: ``N`` image ids (file stems).
        scores: ``(N,)`` float64.
        polygons: ``(N, 8)`` float64, corners ``x1 y1 ... x4 y4``.
    """

    __slots__ = ("image_ids", "scores", "polygons")

    def __init__(self, image_ids: Sequence[str], scores: ArrayLike, polygons: ArrayLike) -> None:
        self.image_ids: list[str] = list(map(str, image_ids))
        self.scores: NDArray[np.float64] = np.asarray(scores, dtype=np.float64).reshape(-1)
        self.polygons: NDArray[np.float64] = np.asarray(polygons, dtype=np.float64).reshape(-1, 8)
        n = len(self.image_ids)
        if self.scores.shape[0] != n or self.polygons.shape[0] != n:
            raise ValueError(f"ClassDetections: {n} image ids, {self.scores.shape[0]} scores and "
                             f"{self.polygons.shape[0]} polygons must be equally many")

    @classmethod
    def empty(cls) -> ClassDetections:
        return cls([], np.zeros(0), np.zeros((0, 8)))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return f"ClassDetections({len(self)} detections, {len(set(self.image_ids))} images)"

    def select(self, index: ArrayLike) -> ClassDetections:
        """A subset (boolean mask or integer indices), order kept as given."""
        idx = np.arange(len(self))[np.asarray(index)]
        return ClassDetections([self.image_ids[i] for i in idx], self.scores[idx], self.polygons[idx])

    @staticmethod
    def concatenate(parts: Iterable[ClassDetections]) -> ClassDetections:
        parts = list(parts)
        if not parts:
            return ClassDetections.empty()
        return ClassDetections([i for p in parts for i in p.image_ids],
                               np.concatenate([p.scores for p in parts]),
                               np.concatenate([p.polygons for p in parts]))


def task1_file_name(class_name: str) -> str:
    """``Task1_<class>.txt``."""
    if not class_name or any(c.isspace() for c in class_name) or "/" in class_name:
        raise ValueError(f"class name {class_name!r} cannot name a Task1 file")
    return f"{_PREFIX}{class_name}{_SUFFIX}"


def _issue(report: Task1ReadReport, strict: bool, path: str, line: int, msg: str) -> None:
    issue = Task1Issue(path, line, msg)
    if strict:
        raise Task1FormatError(str(issue))
    report.issues.append(issue)
    logger.warning("skipped Task1 line: %s", issue)


def _parse_slow(lines: list[str], path: str, strict: bool, report: Task1ReadReport) -> ClassDetections:
    ids: list[str] = []
    values: list[list[float]] = []
    for lineno, raw in enumerate(lines, 1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) != 10:
            _issue(report, strict, path, lineno,
                   f"expected 'image_id score x1 y1 ... x4 y4' (10 fields), got {len(parts)}")
            continue
        try:
            nums = [float(v) for v in parts[1:]]
        except ValueError:
            _issue(report, strict, path, lineno, f"non-numeric score or coordinate in {raw.strip()!r}")
            continue
        if not all(math.isfinite(v) for v in nums):
            _issue(report, strict, path, lineno, f"NaN or inf in {raw.strip()!r}")
            continue
        ids.append(parts[0])
        values.append(nums)
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 9)
    return ClassDetections(ids, arr[:, 0], arr[:, 1:])


# Characters that str.splitlines or np.loadtxt treat as separators besides " " and "\n".
_OTHER_SEPARATORS = "\t\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _simple_lines(text: str) -> list[str] | None:
    """The lines when the file only uses " " and "\n" as separators and holds exactly 9 spaces per
    line on average, else None. Then, once ``np.loadtxt`` has read column 9 of every line (so each
    line has at least 10 fields, hence at least 9 spaces), every line has exactly 10 fields
    separated by single spaces."""
    if not text or any(c in text for c in _OTHER_SEPARATORS):
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines if text.count(" ") == 9 * len(lines) else None


def _parse_fast(text: str) -> ClassDetections | None:
    lines = _simple_lines(text)
    if lines is None:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(text.split()) != 10 * len(lines):
            return None
        ids = [ln.split(None, 1)[0] for ln in lines]
    else:
        ids = [ln.partition(" ")[0] for ln in lines]
    if not lines:
        return ClassDetections.empty()
    try:
        arr = np.loadtxt(io.StringIO(text), usecols=range(1, 10), ndmin=2, comments=None, dtype=np.float64)
    except ValueError:
        return None
    if arr.shape[0] != len(lines) or not np.isfinite(arr).all():
        return None
    return ClassDetections(ids, arr[:, 0], arr[:, 1:])


def parse_task1_text(
    text: str, path: str = "<task1>", strict: bool = False, report: Task1ReadReport | None = None
) -> ClassDetections:
    """Parse the content of one Task1 file (see the module docstring).

    A fast path (``np.loadtxt``) handles well-formed files; anything unusual goes through a
    line-by-line parser that reports each bad line.
    """
    report = report if report is not None else Task1ReadReport()
    report.files += 1
    dets = _parse_fast(text)
    if dets is None:
        dets = _parse_slow(text.splitlines(), path, strict, report)
    report.detections += len(dets)
    _report_scores_out_of_range(text, dets, path, report)
    return dets


def _report_scores_out_of_range(text: str, dets: ClassDetections, path: str, report: Task1ReadReport) -> None:
    bad = np.flatnonzero((dets.scores < 0) | (dets.scores > 1))
    if not len(bad):
        return
    # Detections come from the lines that parse, in order: find their line numbers.
    kept_lines = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        parts = raw.split()
        if len(parts) == 10:
            try:
                if all(math.isfinite(float(v)) for v in parts[1:]):
                    kept_lines.append(lineno)
            except ValueError:
                pass
    for k in bad.tolist():
        line = kept_lines[k] if k < len(kept_lines) else 0
        warning = Task1Issue(path, line, f"score {dets.scores[k]:g} outside [0, 1] (kept; only the order "
                                         "of scores matters, but check the column order)")
        report.warnings.append(warning)
        if len(report.warnings) <= 20:
            logger.warning("%s", warning)


def read_task1_file(
    path: str | Path, strict: bool = False, report: Task1ReadReport | None = None
) -> ClassDetections:
    """Read one ``Task1_<class>.txt`` file."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        report = report if report is not None else Task1ReadReport()
        text = _decode_lines(data, str(path), strict, report)
    return parse_task1_text(text, str(path), strict, report)


def _decode_lines(data: bytes, path: str, strict: bool, report: Task1ReadReport) -> str:
    """The text of a file that is not UTF-8 throughout: bad lines reported and left blank (so the
    others keep their line numbers)."""
    lines = []
    for lineno, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            _issue(report, strict, path, lineno,
                   f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); save the file as UTF-8")
            lines.append("")
    return "\n".join(lines) + "\n"


def read_task1_dir(
    det_dir: str | Path,
    classes: Sequence[str] | None = None,
    strict: bool = False,
    report: Task1ReadReport | None = None,
) -> dict[str, ClassDetections]:
    """Read every ``Task1_<class>.txt`` in a folder.

    Args:
        det_dir: the folder.
        classes: when given, exactly these classes are returned (missing files give empty
            detections, logged); files of other classes are ignored with a warning.
        strict: raise on the first bad line instead of skipping it.
        report: accumulates counts and skipped lines.
    Returns:
        ``{class name: ClassDetections}`` (in ``classes`` order, else sorted by name).
    Raises:
        FileNotFoundError: ``det_dir`` is not a folder.
    """
    det_dir = Path(det_dir)
    if not det_dir.is_dir():
        raise FileNotFoundError(f"detection folder not found: {det_dir}")
    found = {p.name[len(_PREFIX):-len(_SUFFIX)]: p for p in sorted(det_dir.glob(f"{_PREFIX}*{_SUFFIX}"))}
    report = report if report is not None else Task1ReadReport()
    names = list(classes) if classes is not None else sorted(found)
    if classes is not None:
        extra = sorted(set(found) - set(classes))
        if extra:
            logger.warning("%s: ignored Task1 file(s) of classes not in the class list: %s",
                           det_dir, ", ".join(extra))
        missing = [c for c in names if c not in found]
        if missing:
            logger.info("%s: no Task1 file for %d class(es) (no detections): %s", det_dir, len(missing),
                        ", ".join(missing))
    out: dict[str, ClassDetections] = {}
    for name in names:
        out[name] = read_task1_file(found[name], strict, report) if name in found else ClassDetections.empty()
    return out


def _format_lines(dets: ClassDetections) -> str:
    # repr() is the shortest text that reads back to the same float64.
    rows = np.concatenate([dets.scores[:, None], dets.polygons], axis=1).tolist()
    return "".join(f"{i} " + " ".join(map(repr, r)) + "\n" for i, r in zip(dets.image_ids, rows))


def write_task1_file(path: str | Path, dets: ClassDetections) -> None:
    """Write one Task1 file atomically (floats kept exactly)."""
    for image_id in dets.image_ids:
        if not image_id or any(c.isspace() for c in image_id):
            raise ValueError(f"image id {image_id!r} must be non-empty without whitespace")
    if not (np.isfinite(dets.scores).all() and np.isfinite(dets.polygons).all()):
        raise ValueError(f"{path}: detections contain NaN or inf")
    atomic_write_text(Path(path), _format_lines(dets))


def write_task1_dir(det_dir: str | Path, dets: Mapping[str, ClassDetections], classes: Sequence[str]) -> Path:
    """Write ``Task1_<class>.txt`` for every class of ``classes`` (an empty file for a class without
    detections, as the DOTA server expects one file per class).

    Raises:
        ValueError: ``dets`` holds a class that is not in ``classes`` (it would be lost).
    Returns:
        ``det_dir``.
    """
    det_dir = Path(det_dir)
    unknown = sorted(set(dets) - set(classes))
    if unknown:
        raise ValueError(f"detections of classes not in the class list: {', '.join(unknown)}")
    det_dir.mkdir(parents=True, exist_ok=True)
    for name in classes:
        write_task1_file(det_dir / task1_file_name(name), dets.get(name, ClassDetections.empty()))
    return det_dir


def zip_task1_dir(det_dir: str | Path, zip_path: str | Path, classes: Sequence[str] | None = None) -> Path:
    """Pack Task1 files for the DOTA evaluation server: ``Task1_<class>.txt`` at the root of a
    deflated zip (the layout of the official example), written atomically.

    Args:
        det_dir: folder with the Task1 files.
        zip_path: the zip to write.
        classes: when given, exactly one file per class (an empty one where the folder has none);
            otherwise every ``Task1_*.txt`` of the folder.
    Returns:
        ``zip_path``.
    """
    det_dir, zip_path = Path(det_dir), Path(zip_path)
    if not det_dir.is_dir():
        raise FileNotFoundError(f"detection folder not found: {det_dir}")
    if classes is None:
        names = [p.name for p in sorted(det_dir.glob(f"{_PREFIX}*{_SUFFIX}"))]
        if not names:
            raise FileNotFoundError(f"{det_dir}: no {_PREFIX}<class>{_SUFFIX} files to zip")
    else:
        names = [task1_file_name(c) for c in classes]
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            src = det_dir / name
            if src.is_file():
                zf.write(src, arcname=name)
            else:
                zf.writestr(name, "")
    return zip_path
