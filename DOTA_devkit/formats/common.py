"""What every format converter shares: one image with its labels (:class:`Sample`), the image checks,
image placement, and the counts of a conversion (:class:`ConversionReport`).

Counting rule (printed at the end of every conversion): every object read from a source is either
written or reported as skipped, with its file and (where the format has lines) its line::

    objects read = objects written + objects skipped (by kind)
    files read   = files written   + files skipped (by kind)

An object is skipped on its own (a malformed field, an unknown class, a degenerate polygon, a
shape the target cannot hold) or with its file (no image, an unreadable image). Problems that do
not drop anything (an image whose size differs from the size the annotation declares, a polygon
clipped to the image for YOLO-OBB, a quadrilateral written as its minimum-area rectangle) are
*notes*: reported with file and object, counted, kept. ``strict=True`` turns the first skip or
size mismatch into a :class:`~DOTA_devkit.labels.LabelError`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..image_io import IMAGE_EXTENSIONS, index_images
from ..image_sets import read_split_file
from ..labels import LabelError, LabelFile, LabelIssue, LabelReport
from .xml_io import record_issue

__all__ = [
    "FILE_KINDS",
    "IMAGE_MODES",
    "DEFAULT_WORKERS",
    "Sample",
    "SourceData",
    "ReadOptions",
    "ConversionReport",
    "image_size",
    "image_sizes",
    "check_image",
    "place_image",
    "read_split_file",
    "split_files",
    "first_dir",
    "merged_index",
    "xml_files",
    "record_malformed",
    "drop_unknown_classes",
    "find_image",
]

logger = logging.getLogger(__name__)

#: Issue kinds that drop a whole file (with its objects); the other kinds drop one object.
FILE_KINDS: frozenset[str] = frozenset(
    {"malformed-xml", "malformed-json", "malformed-file", "missing-image", "unreadable-image", "duplicate-id"}
)

#: Note kinds logged at INFO (counted in the summary): expected changes of shape, not problems.
QUIET_NOTES: frozenset[str] = frozenset({"approximated", "clipped"})

#: Threads decoding images (OpenCV releases the GIL while decoding).
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)

#: How images reach the output: copied, hard-linked (symlink across file systems), symlinked, not at all.
IMAGE_MODES: tuple[str, ...] = ("copy", "link", "symlink", "none")


@dataclass
class Sample:
    """One image and its labels, as read from any format.

    Attributes:
        image_id: the id used for every output file name (the annotation's stem, usually).
        labels: the objects kept; ``labels.polygons()`` is ``(N, 8)`` pixels, corners as read.
        source: the annotation file (named in messages).
        image: the image file, None when not found.
        declared_size: ``(width, height)`` the annotation states, None when it states none.
        size: ``(width, height)`` of the decoded image, set by :func:`check_image`.
    """

    image_id: str
    labels: LabelFile
    source: Path
    image: Path | None = None
    declared_size: tuple[int, int] | None = None
    size: tuple[int, int] | None = None


@dataclass
class SourceData:
    """A data set as a reader returns it: samples, the format's own class list (None: use the names
    found), its split files ``{name: image ids}`` and the ids of images that have no labels."""

    samples: list[Sample] = field(default_factory=list)
    classes: tuple[str, ...] | None = None
    splits: dict[str, list[str]] = field(default_factory=dict)
    images_without_labels: list[str] = field(default_factory=list)


@dataclass
class ReadOptions:
    """What every folder reader is given.

    Attributes:
        classes: when given, objects of other classes are reported (``unknown-class``) and skipped.
        image_dir: where the images are, when not where the format keeps them.
        strict: the first problem raises :class:`~DOTA_devkit.labels.LabelError`.
        class_map: HRSC2016 ``{Class_ID: name}``.
        min_score: Task1 detections below it are left out.
        workers: threads decoding images.
    """

    classes: tuple[str, ...] | None = None
    image_dir: Path | None = None
    strict: bool = False
    class_map: dict[str, str] | None = None
    min_score: float = 0.3
    workers: int = DEFAULT_WORKERS


@dataclass
class ConversionReport:
    """Counts of one conversion; see the module docstring for the rule they obey."""

    labels: LabelReport = field(default_factory=LabelReport)
    files_written: int = 0
    objects_written: int = 0
    images_written: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # read, kept by the reader, not written
    drop_issues: list[LabelIssue] = field(default_factory=list)  # per-object drops after reading
    unparsed: Counter[str] = field(default_factory=Counter)  # objects of files that could not be read
    images_without_labels: list[str] = field(default_factory=list)
    notes: list[LabelIssue] = field(default_factory=list)
    written: list[str] = field(default_factory=list)  # image ids written
    written_per_class: Counter[str] = field(default_factory=Counter)
    classes: tuple[str, ...] = ()
    files_read: int = 0

    def file_skips(self) -> Counter[str]:
        return Counter(i.kind for i in self.labels.issues if i.kind in FILE_KINDS)

    def object_skips(self) -> Counter[str]:
        """Skipped objects by kind (those skipped with their file count under the file's kind)."""
        out = Counter(i.kind for i in self.labels.issues if i.kind not in FILE_KINDS)
        out.update(self.dropped)
        out.update(self.unparsed)
        return out

    def objects_read(self) -> int:
        """Objects found in the sources: kept by the readers plus skipped by them."""
        skipped_by_readers = sum(1 for i in self.labels.issues if i.kind not in FILE_KINDS)
        return self.labels.objects + skipped_by_readers + sum(self.unparsed.values())

    def drop(self, strict: bool, path: str | Path, line: int, kind: str, message: str) -> None:
        """Record one object that was read but cannot be written (strict raises)."""
        issue = LabelIssue(str(path), line, kind, message)
        if strict:
            raise LabelError(str(issue))
        self.drop_issues.append(issue)
        self.dropped[kind] += 1
        logger.warning("skipped: %s", issue)

    def note(self, strict: bool, path: str | Path, line: int, kind: str, message: str) -> None:
        """Record a problem that drops nothing (``size-mismatch``, ``clipped`` ...); strict raises
        for ``size-mismatch``, the one that may mean the labels belong to another image."""
        issue = LabelIssue(str(path), line, kind, message)
        if strict and kind == "size-mismatch":
            raise LabelError(str(issue))
        self.notes.append(issue)
        # Expected, frequent changes of shape (box-only formats, YOLO's [0, 1] range) are logged at
        # INFO and counted in the summary; the others are warnings.
        level = logging.INFO if kind in QUIET_NOTES else logging.WARNING
        logger.log(level, "note: %s", issue)

    def balanced(self) -> bool:
        """True when read == written + skipped holds for objects and files."""
        files_ok = self.files_read == self.files_written + sum(self.file_skips().values())
        return files_ok and self.objects_read() == self.objects_written + sum(self.object_skips().values())

    def summary(self) -> str:
        """Multi-line summary: files and objects read = written + skipped, notes, classes."""
        fs, os_ = self.file_skips(), self.object_skips()
        lines = [
            f"files: {self.files_read} read = {self.files_written} written + {sum(fs.values())} skipped"
            + (f" ({_kinds(fs)})" if fs else ""),
            f"objects: {self.objects_read()} read = {self.objects_written} written + {sum(os_.values())} "
            "skipped" + (f" ({_kinds(os_)})" if os_ else ""),
            f"images written: {self.images_written}",
        ]
        if self.images_without_labels:
            lines.append(f"images without labels (written as background): {len(self.images_without_labels)}")
        notes = Counter(n.kind for n in self.notes)
        if notes:
            lines.append(f"notes (kept, see the warnings above): {_kinds(notes)}")
        if self.classes:
            lines.append(f"classes ({len(self.classes)}): {' '.join(self.classes)}")
        return "\n".join(lines)


def _kinds(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def image_size(path: str | Path) -> tuple[int, int, int] | None:
    """``(width, height, depth)`` of an image file (fully decoded with OpenCV, so a truncated file
    is caught); None when unreadable."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        return None
    depth = 1 if img.ndim == 2 else int(img.shape[2])
    return int(img.shape[1]), int(img.shape[0]), depth


def image_sizes(paths: Sequence[Path], workers: int = DEFAULT_WORKERS) -> list[tuple[int, int] | None]:
    """``(width, height)`` of each image (None: unreadable), decoded in ``workers`` threads."""
    if not paths:
        return []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        sizes = list(pool.map(image_size, paths))
    return [s[:2] if s else None for s in sizes]


def check_image(sample: Sample, report: ConversionReport, strict: bool) -> bool:
    """Decode ``sample.image``, set ``sample.size`` and compare it with ``declared_size``.

    Returns:
        False when the file is skipped (no image, unreadable image: recorded in ``report`` with the
        file's objects); a size mismatch is a note and the sample is kept.
    Raises:
        LabelError: when ``strict`` and the image is missing, unreadable or of another size.
    """
    kind, message = "", ""
    size = sample.size
    lost = f"{len(sample.labels.objects)} object(s) not converted"
    if sample.image is None:
        kind, message = "missing-image", f"no image found for {sample.image_id} ({lost})"
    elif size is None:
        decoded = image_size(sample.image)
        if decoded is None:
            kind, message = "unreadable-image", f"cannot decode image {sample.image} ({lost})"
        else:
            size = sample.size = decoded[:2]
    if kind or size is None:
        record_issue(report.labels, strict, sample.source, 0, kind, message)
        report.dropped[kind] += len(sample.labels.objects)
        return False
    declared = sample.declared_size
    if declared is not None and size != declared:
        report.note(
            strict,
            sample.source,
            0,
            "size-mismatch",
            f"annotation declares {declared[0]}x{declared[1]}, image {sample.image} is {size[0]}x{size[1]}",
        )
    return True


def place_image(src: Path, dst: Path, mode: str = "copy") -> None:
    """Put ``src`` at ``dst`` atomically: ``copy``, ``link`` (hard link, symlink across file systems)
    or ``symlink`` (absolute). Nothing happens when ``dst`` already is ``src``."""
    if mode not in IMAGE_MODES or mode == "none":
        raise ValueError(f"image mode {mode!r} is not one of copy, link, symlink")
    if dst.exists() and os.path.samefile(src, dst):
        return
    with atomic_path(dst) as tmp:
        if mode == "link":
            try:
                os.link(src, tmp)
            except OSError:
                os.symlink(src.resolve(), tmp)
        elif mode == "symlink":
            os.symlink(src.resolve(), tmp)
        else:
            shutil.copyfile(src, tmp)


# ------------------------------------------------------------------ helpers of the folder readers
def split_files(folder: Path | None) -> dict[str, list[str]]:
    """``{stem: ids}`` of the id lists in a folder (every ``*.txt`` but ``classes.txt``)."""
    if folder is None or not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.glob("*.txt")):
        if p.stem == "classes":
            continue
        ids = read_split_file(p)
        if all(" " not in i for i in ids):
            out[p.stem] = ids
    return out


def first_dir(*candidates: Path) -> Path | None:
    """The first candidate that is a folder."""
    return next((c for c in candidates if c.is_dir()), None)


def merged_index(*folders: Path | None) -> dict[str, Path]:
    """``{stem: image}`` over several folders; the first folder holding a stem wins."""
    index: dict[str, Path] = {}
    for f in folders:
        for k, v in index_images(f).items():
            index.setdefault(k, v)
    return index


def xml_files(folder: Path) -> list[Path]:
    """The ``*.xml`` files of a folder, sorted.

    Raises:
        FileNotFoundError: none there.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
    if not files:
        raise FileNotFoundError(f"no .xml files in {folder}")
    return files


def record_malformed(report: ConversionReport, strict: bool, path: Path, error: Exception, kind: str) -> None:
    """Record a file that could not be parsed (``malformed-xml``, ``malformed-json``)."""
    line = int(getattr(error, "line", 0))
    record_issue(report.labels, strict, path, line, kind, str(error).removeprefix(f"{path}: "))


def drop_unknown_classes(sample: Sample, known: set[str], report: ConversionReport, strict: bool) -> None:
    """Drop (and report) the objects of ``sample`` whose class is not in ``known``."""
    kept = []
    for k, obj in enumerate(sample.labels.objects, 1):
        if obj.class_name in known:
            kept.append(obj)
        else:
            report.drop(
                strict,
                sample.source,
                k,
                "unknown-class",
                f"object {k}: class {obj.class_name!r} is not in the class list",
            )
    sample.labels.objects = kept


def find_image(index: dict[str, Path], stem: str, filename: str | None = None) -> Path | None:
    """The image of a label file: by the label file's stem first, then by the XML ``<filename>``
    (with or without its suffix). None when not found."""
    if stem in index:
        return index[stem]
    if filename:
        name = Path(filename.replace("\\", "/")).name
        base, suffix = os.path.splitext(name)
        key = base if suffix.lower() in IMAGE_EXTENSIONS else name
        if key in index:
            return index[key]
    return None
