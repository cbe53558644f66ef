"""Picture workflows: folders of ground truth, Task1 detections or a checkpoint's predictions drawn
into PNG files, and a grid of augmented training samples.

The drawing itself is :mod:`bbavectors.drawing` (the layer below: colours, polygons, labels, legend,
the picture-size bound); predictions come from :class:`bbavectors.inference.predictor.Predictor`,
the same path as validation and ``tools/test.py``. Used by ``tools/visualize.py``; each helper writes
one PNG per image atomically and returns the written files:
:func:`visualize_labels` (DOTA labelTxt), :func:`visualize_task1` (``Task1_<class>.txt``
detections) and :func:`visualize_checkpoint` (a checkpoint's predictions);
:func:`augmentation_grid` tiles augmented training samples of a :class:`DotaDataset` with their boxes.
Unreadable images are logged, counted and skipped; a missing folder is a ``FileNotFoundError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from DOTA_devkit.labels import LabelFile, LabelReport, read_dota_label

from .data.image_io import ImageReadError, read_image, write_image
from .drawing import (
    MAX_PICTURE_SIDE,
    class_colors,
    draw_detections,
    draw_label_file,
    draw_polygons,
    fit_picture,
    put_label,
    side_by_side,
    to_numpy,
)

__all__ = [
    "class_colors",
    "draw_polygons",
    "draw_label_file",
    "draw_detections",
    "fit_picture",
    "MAX_PICTURE_SIDE",
    "augmentation_grid",
    "visualize_labels",
    "visualize_task1",
    "visualize_checkpoint",
    "visualize_comparison",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ augmentation grid
def augmentation_grid(
    dataset: Any,
    n: int = 16,
    cols: int = 4,
    seed: int = 0,
    gap: int = 4,
    thickness: int = 2,
) -> NDArray[np.uint8]:
    """Tile ``n`` augmented samples of ``dataset`` (a ``DotaDataset``) with their boxes.

    Sample ``k`` is image ``k % len(dataset)`` with the augmentation drawn from
    ``np.random.default_rng(seed + k)`` (repeatable; images repeat with different augmentations when
    ``n > len(dataset)``). Cells are ``S x S`` (the dataset's input size) separated and surrounded
    by ``gap`` white pixels, with the image id at the top-left.

    Returns:
        ``(rows * S + (rows + 1) * gap, cols * S + (cols + 1) * gap, 3)`` uint8 RGB,
        ``rows = ceil(n / cols)``.
    """
    if n < 1 or cols < 1:
        raise ValueError(f"n and cols must be >= 1, got {n}, {cols}")
    if len(dataset) == 0:
        raise ValueError("the data set is empty")
    cols = min(cols, n)
    rows = -(-n // cols)
    names = list(dataset.classes)
    colors = class_colors(len(names))
    cells: list[NDArray[np.uint8]] = []
    for k in range(n):
        index = k % len(dataset)
        if hasattr(dataset, "load_sample"):
            sample = dataset.load_sample(index, rng=np.random.default_rng(seed + k))
        else:
            sample = dataset[index]
        img = to_numpy(sample["image"]).transpose(1, 2, 0)
        cell = draw_polygons(img, to_numpy(sample["polygons"]), to_numpy(sample["classes"]), None, names,
                             colors, difficult=to_numpy(sample["difficult"]), thickness=thickness,
                             show_labels=False, legend=False)
        put_label(cell, f"{sample['image_id']} #{k}", (2, 0), (255, 255, 255), 0.4)
        cells.append(cell)
    size = cells[0].shape[0]
    grid = np.full((rows * size + (rows + 1) * gap, cols * size + (cols + 1) * gap, 3), 255, np.uint8)
    for k, cell in enumerate(cells):
        r, c = divmod(k, cols)
        y, x = gap + r * (size + gap), gap + c * (size + gap)
        grid[y:y + size, x:x + size] = cell
    return grid


# ------------------------------------------------------------------------------ folder helpers
def _list_images(images_dir: str | Path, image_ids: Sequence[str] | None = None) -> dict[str, Path]:
    """The images of a folder (id -> path), restricted to ``image_ids`` (in their order) when given."""
    from .data.dataset import list_images

    if not Path(images_dir).is_dir():
        raise FileNotFoundError(f"image folder not found: {images_dir}")
    found = list_images(images_dir)
    if not found:
        raise FileNotFoundError(f"no images in {images_dir}")
    if image_ids is None:
        return found
    missing = [i for i in image_ids if i not in found]
    if missing:
        logger.warning("%d listed image id(s) have no image in %s and are skipped (e.g. %s)", len(missing),
                       images_dir, missing[0])
    chosen = {i: found[i] for i in image_ids if i in found}
    if not chosen:
        raise FileNotFoundError(f"none of the {len(image_ids)} listed image id(s) is in {images_dir}")
    return chosen


def _need_dir(folder: str | Path, what: str) -> Path:
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{what} not found: {folder}")
    return Path(folder)


def _make_out_dir(out_dir: str | Path) -> Path:
    """Create the output folder (OSError with the path when it cannot be)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create output folder {out}: {e.strerror or e}") from e
    return out


def _report_skipped(skipped: list[str]) -> None:
    if skipped:
        logger.warning("%d unreadable image(s) skipped (e.g. %s)", len(skipped), skipped[0])


def _read_or_skip(path: Path, skipped: list[str]) -> NDArray[np.uint8] | None:
    try:
        return read_image(path)
    except ImageReadError as e:
        skipped.append(str(path))
        logger.warning("skipped unreadable image: %s", e)
        return None


def _write_pictures(
    images: dict[str, Path], image_ids: Sequence[str], out_dir: str | Path, desc: str,
    draw: Callable[[str, NDArray[np.uint8]], NDArray[np.uint8]],
) -> list[Path]:
    """``<out_dir>/<id>.png`` = ``draw(id, image)`` for each id (unreadable images logged, counted and
    skipped); returns the written files."""
    out = _make_out_dir(out_dir)
    written: list[Path] = []
    skipped: list[str] = []
    for image_id in tqdm(image_ids, desc=desc, disable=len(image_ids) < 10):
        image = _read_or_skip(images[image_id], skipped)
        if image is None:
            continue
        target = out / f"{image_id}.png"
        write_image(target, draw(image_id, image))
        written.append(target)
    _report_skipped(skipped)
    return written


def _read_labels(
    images: dict[str, Path], labels_dir: str | Path, classes: Sequence[str] | None
) -> tuple[dict[str, LabelFile], list[str]]:
    """Parsed label files of ``images`` (those without one are reported and left out) and the class
    names to draw with (``classes``, or the classes found, sorted)."""
    folder = _need_dir(labels_dir, "label folder")
    report = LabelReport()
    parsed: dict[str, LabelFile] = {}
    missing = []
    for image_id in images:
        path = folder / f"{image_id}.txt"
        if not path.is_file():
            missing.append(image_id)
            continue
        parsed[image_id] = read_dota_label(path, classes=classes, report=report)
    if missing:
        logger.warning("%d image(s) have no label file in %s and are skipped (e.g. %s)", len(missing),
                       folder, missing[0])
    names = list(classes) if classes is not None else sorted(
        {o.class_name for lf in parsed.values() for o in lf.objects})
    logger.info("labels: %s", report.summary())
    return parsed, names


def visualize_labels(
    images_dir: str | Path, labels_dir: str | Path, out_dir: str | Path, classes: Sequence[str] | None = None,
    show_labels: bool = True, image_ids: Sequence[str] | None = None,
) -> list[Path]:
    """Draw each image's DOTA labelTxt (``<labels_dir>/<id>.txt``); ``classes`` None = the classes
    found, sorted. Images without a label file are reported and skipped; ``image_ids`` restricts the
    images (e.g. a split file's). Returns the written files."""
    images = _list_images(images_dir, image_ids)
    parsed, names = _read_labels(images, labels_dir, classes)
    return _write_pictures(
        images, list(parsed), out_dir, "draw labels",
        lambda image_id, image: draw_label_file(image, parsed[image_id], names, show_labels=show_labels))


_Task1Items = dict[str, list[tuple[NDArray[np.float64], float, int]]]


def _task1_by_image(det_dir: str | Path, images: dict[str, Path], score_thresh: float,
                    classes: Sequence[str] | None) -> tuple[_Task1Items, list[str]]:
    """Task1 detections scoring >= ``score_thresh`` grouped by image (``[(polygon (8,), score, class
    index)]``) and the class names (``classes``, or those of the files, sorted)."""
    from DOTA_devkit.task1 import read_task1_dir

    dets = read_task1_dir(_need_dir(det_dir, "detection folder"))
    names = list(classes) if classes is not None else sorted(dets)
    per_image: _Task1Items = {}
    orphans = 0
    for ci, name in enumerate(names):
        cd = dets.get(name)
        if cd is None:
            continue
        for image_id, score, poly in zip(cd.image_ids, cd.scores, cd.polygons):
            if score < score_thresh:
                continue
            if image_id not in images:
                orphans += 1
                continue
            per_image.setdefault(image_id, []).append((np.asarray(poly, np.float64), float(score), ci))
    if orphans:
        logger.warning("%d detection(s) name images that are not among the chosen images", orphans)
    return per_image, names


def _draw_task1(image: NDArray[np.uint8], items: list[tuple[NDArray[np.float64], float, int]],
                names: Sequence[str], show_labels: bool) -> NDArray[np.uint8]:
    polys = np.stack([p for p, _, _ in items]) if items else np.zeros((0, 8))
    return draw_polygons(image, polys, [c for _, _, c in items], [s for _, s, _ in items], names,
                         show_labels=show_labels)


def visualize_task1(
    images_dir: str | Path, det_dir: str | Path, out_dir: str | Path, score_thresh: float = 0.3,
    classes: Sequence[str] | None = None, show_labels: bool = True, image_ids: Sequence[str] | None = None,
) -> list[Path]:
    """Draw Task1 detections (``Task1_<class>.txt``) on each image that has some above the threshold.

    ``classes`` fixes colours and restricts the drawn classes (default: the classes of the files).
    Detections of image ids without an image file are counted and logged; ``image_ids`` restricts
    the images."""
    images = _list_images(images_dir, image_ids)
    per_image, names = _task1_by_image(det_dir, images, score_thresh, classes)
    return _write_pictures(
        images, sorted(per_image), out_dir, "draw detections",
        lambda image_id, image: _draw_task1(image, per_image[image_id], names, show_labels))


def visualize_checkpoint(
    images_dir: str | Path, checkpoint: str | Path, out_dir: str | Path, score_thresh: float = 0.3,
    device: str = "cpu", input_size: int | None = None, show_labels: bool = True,
    image_ids: Sequence[str] | None = None, tta: str = "none",
) -> list[Path]:
    """Draw a checkpoint's predictions (:class:`~bbavectors.inference.predictor.Predictor`: letterbox,
    model, decode with NMS, original pixels); only detections scoring above ``score_thresh``.
    ``tta``: the predictor's test-time augmentation (:data:`bbavectors.inference.tta.TTA_MODES`).

    Raises:
        CheckpointLoadError: the checkpoint is missing or not usable.
        FileNotFoundError: no image folder, or no image in it.
    """
    from .inference.predictor import Predictor

    images = _list_images(images_dir, image_ids)
    predictor = Predictor.from_checkpoint(checkpoint, device=device, batch_size=1, score_thresh=score_thresh,
                                          tta=tta)
    if input_size is not None:
        predictor.cfg.data.input_size = int(input_size)
    def draw(image_id: str, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        det = predictor.predict_images([image])[0]
        return draw_detections(image, det, predictor.classes, show_labels=show_labels)

    return _write_pictures(images, list(images), out_dir, "predict", draw)


def visualize_comparison(
    images_dir: str | Path, labels_dir: str | Path, out_dir: str | Path, *, det_dir: str | Path | None = None,
    checkpoint: str | Path | None = None, score_thresh: float = 0.3, device: str = "cpu",
    classes: Sequence[str] | None = None, show_labels: bool = True, image_ids: Sequence[str] | None = None,
    tta: str = "none",
) -> list[Path]:
    """Ground truth (left) beside predictions (right), one PNG per image that has a label file.

    The predictions are Task1 detections (``det_dir``) or a checkpoint's (``checkpoint``, through the
    :class:`~bbavectors.inference.predictor.Predictor`), scoring >= ``score_thresh``; each half is
    captioned with its box count. ``classes``: names and colours (default: the checkpoint's, else
    the classes found). ``tta``: the checkpoint's test-time augmentation (as
    :func:`visualize_checkpoint`).

    Raises:
        ValueError: not exactly one of ``det_dir`` and ``checkpoint``, or ``tta`` with ``det_dir``.
        CheckpointLoadError, FileNotFoundError: as :func:`visualize_checkpoint` / :func:`visualize_labels`.
    """
    if (det_dir is None) == (checkpoint is None):
        raise ValueError("compare ground truth with exactly one of det_dir or checkpoint")
    if tta != "none" and checkpoint is None:
        raise ValueError("test-time augmentation applies to a checkpoint's predictions, not to det_dir")
    images = _list_images(images_dir, image_ids)
    predict: Any
    if checkpoint is not None:
        from .inference.predictor import Predictor

        predictor = Predictor.from_checkpoint(checkpoint, device=device, batch_size=1,
                                              score_thresh=score_thresh, tta=tta)
        classes = list(predictor.classes) if classes is None else classes
    parsed, names = _read_labels(images, labels_dir, classes)
    if checkpoint is not None:
        def predict(image_id: str, image: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], int]:
            det = predictor.predict_images([image])[0]
            return draw_detections(image, det, names, show_labels=show_labels), len(to_numpy(det["scores"]))
    else:
        per_image, names = _task1_by_image(det_dir, images, score_thresh, names)  # type: ignore[arg-type]

        def predict(image_id: str, image: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], int]:
            items = per_image.get(image_id, [])
            return _draw_task1(image, items, names, show_labels), len(items)
    def draw(image_id: str, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        lf = parsed[image_id]
        truth = draw_label_file(image, lf, names, show_labels=show_labels)
        predicted, count = predict(image_id, image)
        captions = (f"{image_id}: ground truth ({len(lf.objects)})",
                    f"predictions >= {score_thresh:g} ({count})")
        return side_by_side(truth, predicted, captions)

    return _write_pictures(images, list(parsed), out_dir, "compare", draw)
