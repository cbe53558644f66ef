"""Ultralytics YOLO-OBB labels and data sets, both ways.

Format (https://docs.ultralytics.com/datasets/obb/, "YOLO OBB format"): one ``.txt`` per image,
one object per line::

    class_index x1 y1 x2 y2 x3 y3 x4 y4

corners normalised by the image width (``x``) and height (``y``) to ``[0, 1]``; ``class_index``
indexes the ``names`` of the data set's YAML (a list, or a dict ``{0: name, ...}``). Labels sit in a
``labels`` folder mirroring ``images`` (``.../images/a.jpg`` -> ``.../labels/a.txt``, the last
``images`` path component replaced); an image without a label file is a background image. The
YAML's ``train`` / ``val`` / ``test`` are an image folder, a ``.txt`` list of image paths (``./``
relative to the list's folder) or a list of those, relative to ``path``.

Conventions: pixel corners are ``x * width, y * height`` in the file's corner order (Ultralytics
fits its own ``xywhr`` box to the 4 points, so the order carries no angle: nothing to convert, and
DOTA -> YOLO-OBB -> DOTA keeps the order). YOLO has no difficult flag: read objects get 0, written
ones lose it. Ultralytics refuses a whole label file holding a value outside ``[0, 1]``, so the
writer clamps corners to the image (counted as ``clipped`` notes) and the reader skips such objects
(``out-of-range``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from ..image_io import IMAGE_EXTENSIONS
from ..labels import DotaObject, LabelFile, LabelReport
from .common import (
    ConversionReport,
    ReadOptions,
    Sample,
    SourceData,
    drop_unknown_classes,
    image_sizes,
)
from .xml_io import accept_object, record_issue

__all__ = [
    "parse_yolo_obb_lines",
    "format_yolo_obb_line",
    "image_to_label_path",
    "load_data_yaml",
    "list_split_images",
    "write_yolo_obb_labels",
    "write_data_yaml",
    "write_image_list",
    "read_yolo_obb_dataset",
]

#: Decimals of the normalised coordinates: 1e-7 of a 20000 px side is 0.002 px.
DECIMALS = 7


def parse_yolo_obb_lines(
    lines: Iterable[str],
    path: str | Path,
    names: Sequence[str],
    size: tuple[int, int],
    strict: bool = False,
    report: LabelReport | None = None,
) -> LabelFile:
    """Parse one YOLO-OBB label file into pixel polygons.

    Args:
        lines: the file's lines.
        path: shown in messages.
        names: the class names, index = ``class_index``.
        size: ``(width, height)`` of the image, pixels.
    Returns:
        ``LabelFile``; ``polygons()`` is ``(N, 8)`` pixels, corner order as in the file.
    """
    report = report if report is not None else LabelReport()
    report.files += 1
    out = LabelFile()
    w, h = size
    for lineno, raw in enumerate(lines, 1):
        parts = raw.split()
        if not parts:
            continue
        kind, message = "", ""
        values: list[float] = []
        if len(parts) != 9:
            kind, message = "malformed", f"expected 'class x1 y1 ... x4 y4' (9 fields), got {len(parts)}"
        else:
            try:
                values = [float(v) for v in parts]
            except ValueError:
                kind, message = "malformed", f"non-numeric field in {raw.strip()!r}"
        if not kind and not all(math.isfinite(v) for v in values):
            kind, message = "non-finite", f"NaN or inf in {raw.strip()!r}"
        if not kind and (not values[0].is_integer() or not 0 <= values[0] < len(names)):
            kind, message = "unknown-class", f"class index {parts[0]} is not in 0..{len(names) - 1}"
        if not kind and not all(-1e-6 <= v <= 1 + 1e-6 for v in values[1:]):
            kind, message = (
                "out-of-range",
                "coordinates must be normalised to [0, 1] (Ultralytics refuses others)",
            )
        if kind:
            record_issue(report, strict, path, lineno, kind, f"object {lineno}: {message}")
            continue
        poly = np.array(values[1:], dtype=np.float64) * np.tile([w, h], 4)
        accept_object(out, report, strict, path, lineno, lineno, poly, names[int(values[0])], 0, None)
    return out


def format_yolo_obb_line(
    polygon: NDArray[np.float64], class_index: int, size: tuple[int, int]
) -> tuple[str, bool]:
    """One label line for a pixel polygon ``(8,)`` on an image of ``size = (width, height)``.

    Returns:
        the line (no newline) and whether a corner had to be clamped to the image.
    """
    w, h = size
    norm = np.asarray(polygon, dtype=np.float64).reshape(8) / np.tile([w, h], 4)
    clipped = bool(((norm < 0) | (norm > 1)).any())
    norm = np.clip(norm, 0.0, 1.0)
    coords = " ".join(_num(v) for v in norm)
    return f"{int(class_index)} {coords}", clipped


def _num(v: float) -> str:
    s = f"{v:.{DECIMALS}f}".rstrip("0").rstrip(".")
    return s or "0"


def image_to_label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` component of the path becomes ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def load_data_yaml(path: Path) -> tuple[Path, tuple[str, ...], dict[str, Any]]:
    """``(root, names, splits)`` of a data set YAML; ``splits`` maps train/val/test to their entry.

    Raises:
        ValueError: unreadable YAML, or ``names`` missing / not a list or an index dict.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the data set YAML ({e})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise ValueError(f"{path}: no 'names' in the data set YAML")
    raw = data["names"]
    if isinstance(raw, dict):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: 'names' keys must be class indices") from None
        if keys != list(range(len(keys))):
            raise ValueError(f"{path}: 'names' indices must be 0..{len(keys) - 1}")
        names = tuple(str(raw[k] if k in raw else raw[str(k)]) for k in keys)
    elif isinstance(raw, list):
        names = tuple(str(n) for n in raw)
    else:
        raise ValueError(f"{path}: 'names' must be a list or a dict")
    root = Path(str(data.get("path") or path.parent))
    if not root.is_absolute():
        root = path.parent / root if (path.parent / root).is_dir() else root
    splits = {k: data[k] for k in ("train", "val", "test") if data.get(k)}
    return root, names, splits


def list_split_images(root: Path, entry: Any) -> list[Path]:
    """Images of a YAML split entry: a folder (searched recursively), a ``.txt`` list of image paths,
    or a list of those; paths relative to ``root``."""
    entries = entry if isinstance(entry, list) else [entry]
    out: list[Path] = []
    for e in entries:
        p = Path(str(e))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
        elif p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line:
                    continue
                q = Path(line)
                if line.startswith("./"):
                    q = p.parent / line[2:]
                elif not q.is_absolute():
                    q = root / q
                out.append(q)
    return out


def write_yolo_obb_labels(
    path: Path, objects: Sequence[DotaObject], names: Sequence[str], size: tuple[int, int]
) -> list[int]:
    """Write one label file atomically (every object's class must be in ``names``).

    Returns:
        indices of the objects whose corners were clamped to the image.
    """
    index = {n: i for i, n in enumerate(names)}
    lines, clipped = [], []
    for k, obj in enumerate(objects):
        line, was_clipped = format_yolo_obb_line(obj.polygon, index[obj.class_name], size)
        lines.append(line)
        if was_clipped:
            clipped.append(k)
    _write_text(path, "".join(f"{line}\n" for line in lines))
    return clipped


def write_data_yaml(
    path: Path, root: Path, names: Sequence[str], train: str, val: str, test: str | None = None
) -> None:
    """Write the data set YAML: absolute ``path``, ``train`` / ``val`` (/ ``test``) relative to it,
    ``names`` as an index dict (what Ultralytics writes)."""
    data: dict[str, Any] = {"path": str(root.resolve()), "train": train, "val": val}
    if test:
        data["test"] = test
    data["names"] = {i: n for i, n in enumerate(names)}
    _write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_image_list(path: Path, images: Sequence[str]) -> None:
    """A split list: one ``./images/<file>`` per line (Ultralytics resolves ``./`` against the
    list's folder)."""
    _write_text(path, "".join(f"./images/{name}\n" for name in images))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _count_lines(path: Path) -> int:
    try:
        return sum(
            1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()
        )
    except OSError:
        return 0


def _find_yaml(src: Path) -> Path | None:
    if src.is_file():
        return src
    if (src / "data.yaml").is_file():
        return src / "data.yaml"
    return next(iter(sorted(src.glob("*.yaml"))), None)


def _images(src: Path, options: ReadOptions, out: SourceData) -> tuple[Path, tuple[str, ...], list[Path]]:
    """``(root, names, images)`` from the data YAML (its splits go to ``out.splits``), or from
    ``src/images/**`` with ``options.classes`` as the names."""
    yaml_path = _find_yaml(src)
    if yaml_path is None:
        if options.classes is None:
            raise ValueError(f"{src}: no data set YAML: give the class names (--classes FILE, one per line)")
        found = sorted(p for p in (src / "images").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        return src, options.classes, [p for p in found if p.is_file()]
    root, names, entries = load_data_yaml(yaml_path)
    images: list[Path] = []
    for split, entry in entries.items():
        listed = list_split_images(root, entry)
        out.splits[split] = [p.stem for p in listed]
        images += listed
    return root, names, images


def read_yolo_obb_dataset(src: Path, options: ReadOptions, report: ConversionReport) -> SourceData:
    """An Ultralytics data set (module docstring): its YAML or folder.

    Every listed image is decoded (its size turns the normalised corners into pixels); label files
    under ``labels/`` that no image claims are reported (``missing-image``) with their line count.
    """
    out = SourceData()
    root, names, listed = _images(src, options, out)
    out.classes = names
    seen: dict[str, Path] = {}
    images: list[Path] = []
    for image in listed:
        if image.stem not in seen:
            seen[image.stem] = image
            images.append(image)
        elif seen[image.stem].resolve() != image.resolve():
            record_issue(
                report.labels,
                options.strict,
                image,
                0,
                "duplicate-id",
                f"image id {image.stem!r} already used by {seen[image.stem]}",
            )
    sizes = image_sizes([p for p in images if p.is_file()], options.workers)
    size_of = dict(zip([p for p in images if p.is_file()], sizes))
    for image in images:
        label = image_to_label_path(image)
        size = size_of.get(image)
        sample = Sample(
            image.stem,
            LabelFile(),
            label if label.is_file() else image,
            image if image.is_file() else None,
            size=size,
        )
        if size is None:
            # Without the image the lines cannot become pixels: counted with the file's problem.
            lines = _count_lines(label) if label.is_file() else 0
            report.unparsed["missing-image" if sample.image is None else "unreadable-image"] += lines
        elif label.is_file():
            text = label.read_text(encoding="utf-8-sig", errors="replace").splitlines()
            sample.labels = parse_yolo_obb_lines(text, label, names, size, options.strict, report.labels)
            if options.classes is not None:
                drop_unknown_classes(sample, set(options.classes), report, options.strict)
        else:
            out.images_without_labels.append(image.stem)
        out.samples.append(sample)
    if (root / "labels").is_dir():
        used = {image_to_label_path(p).resolve() for p in images}
        for orphan in sorted((root / "labels").rglob("*.txt")):
            if orphan.resolve() not in used:
                n = _count_lines(orphan)
                record_issue(
                    report.labels,
                    options.strict,
                    orphan,
                    0,
                    "missing-image",
                    f"label file without an image ({n} object line(s) not converted)",
                )
                report.unparsed["missing-image"] += n
    return out
