"""Test runs: a folder of patches, a split file, or whole scenes -> Task1 files, pictures, zip, mAP.

Inputs (``InferenceOptions``):

* ``images``: a folder of images (png, jpg, tif, bmp; image id = file stem).
* ``split``: optional split file (one id per line, as :func:`bbavectors.data.dataset.read_split_file`);
  only those ids are run; ids without an image are reported.
* ``scenes``: each image is a whole scene of any size, cut into windows on the fly
  (:mod:`bbavectors.inference.scenes`); otherwise each image is letterboxed to the model's input
  size as in training (:class:`~bbavectors.inference.predictor.Predictor`).

Images are decoded (and letterboxed) in DataLoader workers; unreadable images are logged with the
reason, counted and skipped. An empty input is an error.

Outputs in ``out``:

* ``Task1_<class>.txt``: one file per class (all classes, empty files included), lines
  ``image_id score x1 y1 ... x4 y4`` in original image pixels, ids = file stems.
* ``merged/Task1_<class>.txt``: only when every image id is a DOTA patch name
  ``<id>__<rate>__<left>___<up>`` (patch mode): scene-level results of
  :func:`DOTA_devkit.merge.merge_detections` (shift by the patch offset, divide by the rate,
  per-class rotated NMS at ``merge_nms_thresh``).
* ``pictures/<id>.png`` with ``pictures``: polygons in class colours with scores.
* ``task1.zip`` with ``zip``: the scene-level Task1 files (``merged/`` when it exists), as the DOTA
  evaluation server wants them.
* ``eval.json`` with ``eval_labels``: DOTA Task1 AP per class (``DOTA_devkit.eval.evaluate_task1``).
  The results whose image ids have label files in that folder are evaluated: the per-image
  results, or the merged ones when the folder holds scene labels instead of patch labels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch.utils.data import DataLoader
from tqdm import tqdm

from DOTA_devkit.eval import Task1Result, evaluate_task1, load_ground_truth, write_result_json
from DOTA_devkit.labels import LabelReport
from DOTA_devkit.merge import merge_detections, parse_patch_name
from DOTA_devkit.task1 import ClassDetections, write_task1_dir, zip_task1_dir

from ..data.dataset import list_images, read_split_file
from ..data.image_io import IMAGE_EXTENSIONS, write_image
from ..data.loader import worker_init
from ..drawing import draw_detections
from .collect import (
    DetectionCollector,
    FilesRun,
    ImageFileDataset,
    collate_patches,
    predict_image_files,
    report_unreadable,
)
from .predictor import Detections, Predictor
from .scenes import DOTA_MERGE_NMS_THRESH, SceneSettings, predict_scene

__all__ = [
    "InferenceInputError",
    "InferenceOptions",
    "InferenceSummary",
    "ImageFileDataset",
    "collate_patches",
    "DetectionCollector",
    "list_inputs",
    "run_inference",
    "evaluate_results",
]

logger = logging.getLogger(__name__)


class InferenceInputError(ValueError):
    """The inputs of a test run are unusable (no images, empty split...)."""


@dataclass
class InferenceOptions:
    """What to run and what to write (module docstring)."""

    images: Path
    out: Path
    scenes: bool = False
    split: Path | None = None
    eval_labels: Path | None = None
    zip: bool = False
    pictures: bool = False
    workers: int = 2
    scene: SceneSettings = field(default_factory=SceneSettings)
    #: Per-class rotated NMS IoU when merging patches into scenes (``merged/``).
    merge_nms_thresh: float = DOTA_MERGE_NMS_THRESH
    progress: bool = True


@dataclass
class InferenceSummary:
    """What a run did."""

    num_images: int
    num_unreadable: int
    unreadable: list[str]
    num_detections: int
    task1_dir: Path
    seconds: float
    merged_dir: Path | None = None
    zip_path: Path | None = None
    eval_result: Task1Result | None = None
    eval_json: Path | None = None
    eval_level: str | None = None
    pictures_dir: Path | None = None


# ----------------------------------------------------------------------------------- inputs
def list_inputs(images: str | Path, split: str | Path | None = None) -> dict[str, Path]:
    """``{image id: path}`` of the images to run, in id order (split order with a split file).

    Raises:
        FileNotFoundError: the folder or split file does not exist.
        InferenceInputError: no image to run.
    """
    images = Path(images)
    found = list_images(images)
    if split is None:
        if not found:
            raise InferenceInputError(
                f"no images in {images} (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
        return _check_ids(found, images)
    split = Path(split)
    if not split.is_file():
        raise FileNotFoundError(f"split file not found: {split}")
    ids = read_split_file(split)
    if not ids:
        raise InferenceInputError(f"split file {split} lists no image ids")
    missing = [i for i in ids if i not in found]
    if missing:
        logger.warning("%s: %d of %d id(s) have no image in %s and are skipped (e.g. %s)",
                       split, len(missing), len(ids), images, ", ".join(missing[:5]))
    selected = {i: found[i] for i in ids if i in found}
    if not selected:
        raise InferenceInputError(f"none of the {len(ids)} ids of {split} has an image in {images}")
    return _check_ids(selected, images)


def _check_ids(selected: dict[str, Path], images: Path) -> dict[str, Path]:
    spaced = [i for i in selected if any(c.isspace() for c in i)]
    if spaced:
        # Task1 lines are split on whitespace: refuse before the run rather than fail when writing.
        raise InferenceInputError(f"{len(spaced)} image name(s) in {images} contain whitespace, which the "
                                  f"Task1 format cannot hold (e.g. {spaced[0]!r}); rename them")
    return selected


# ----------------------------------------------------------------------------------- evaluation
def evaluate_results(
    detections: Mapping[str, ClassDetections], image_ids: Sequence[str], label_dir: str | Path,
    classes: Sequence[str], iou_thresh: float = 0.5,
) -> tuple[Task1Result, list[str]]:
    """DOTA Task1 AP of ``detections`` over ``image_ids`` against ``label_dir/<id>.txt``.

    Images without a label file are evaluated as images without objects (their detections count as
    false positives; :func:`DOTA_devkit.eval.load_ground_truth` logs them) and returned as the second
    value. Label lines that cannot be parsed are reported and skipped by the label parser.

    Raises:
        FileNotFoundError: no label folder, or no label file for any of the images.
    """
    label_dir = Path(label_dir)
    report = LabelReport()
    gt = load_ground_truth(label_dir, list(image_ids), report=report)
    missing = [i for i in image_ids if not (label_dir / f"{i}.txt").is_file()]
    logger.info("ground truth %s: %s", label_dir, report.summary())
    return evaluate_task1(detections, gt, classes, iou_thresh=iou_thresh), missing


def _patch_scene_ids(image_ids: Sequence[str]) -> list[str] | None:
    """Scene ids when every id is a DOTA patch name, else None."""
    scenes: list[str] = []
    for image_id in image_ids:
        try:
            scene_id = parse_patch_name(image_id)[0]
        except ValueError:
            return None
        if scene_id not in scenes:
            scenes.append(scene_id)
    return scenes


def _has_labels(label_dir: Path, ids: Sequence[str]) -> int:
    return sum((label_dir / f"{i}.txt").is_file() for i in ids)


# ----------------------------------------------------------------------------------- the run
def _run_patches(predictor: Predictor, items: Sequence[tuple[str, Path]], options: InferenceOptions
                 ) -> FilesRun:
    def picture(image_id: str, original: NDArray[np.uint8] | None, dets: Detections) -> None:
        if original is not None:
            _save_picture(options.out, image_id, original, dets, predictor.classes)

    return predict_image_files(predictor, items, workers=options.workers, progress=options.progress,
                               on_image=picture if options.pictures else None,
                               keep_originals=options.pictures)


def _run_scenes(predictor: Predictor, items: Sequence[tuple[str, Path]], options: InferenceOptions
                ) -> FilesRun:
    dataset = ImageFileDataset(items, None)
    run = FilesRun(DetectionCollector(predictor.classes))
    # One scene per item: the workers decode the next scenes while this one runs.
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=options.workers,
                        collate_fn=_identity, pin_memory=predictor.device.type == "cuda",
                        worker_init_fn=worker_init, prefetch_factor=2 if options.workers > 0 else None)
    for it in tqdm(loader, total=len(dataset), desc="scenes", unit="scene", disable=not options.progress):
        if it["error"] is not None:
            report_unreadable(it, run.unreadable)
            continue
        dets = {k: v.cpu() for k, v in predict_scene(predictor, it["image"], options.scene).items()}
        run.collector.add(it["image_id"], dets)
        if options.pictures:
            _save_picture(options.out, it["image_id"], it["image"].numpy(), dets, predictor.classes)
    return run


def _identity(item: Any) -> Any:
    return item


def _save_picture(out: Path, image_id: str, image: NDArray[np.uint8], dets: Detections,
                  classes: Sequence[str]) -> None:
    folder = out / "pictures"
    folder.mkdir(parents=True, exist_ok=True)
    # draw_detections downsizes big images before drawing (bounded memory and file size).
    write_image(folder / f"{image_id}.png", draw_detections(image, dets, classes))


def run_inference(predictor: Predictor, options: InferenceOptions) -> InferenceSummary:
    """Run a test (module docstring) and write its outputs into ``options.out``.

    Raises:
        FileNotFoundError: missing image folder, split file or label folder.
        InferenceInputError: nothing to run, or every image unreadable.
    """
    start = time.perf_counter()
    if options.eval_labels is not None and not Path(options.eval_labels).is_dir():
        raise FileNotFoundError(f"label folder not found: {options.eval_labels}")
    inputs = list_inputs(options.images, options.split)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    items = list(inputs.items())
    logger.info("%d %s from %s on %s", len(items), "scene(s)" if options.scenes else "image(s)",
                options.images, predictor.device)
    run = (_run_scenes if options.scenes else _run_patches)(predictor, items, options)
    collector, unreadable = run.collector, run.unreadable
    if unreadable:
        logger.warning("%d of %d image(s) were unreadable and skipped", len(unreadable), len(items))
    if not collector.image_ids:
        raise InferenceInputError(f"all {len(items)} image(s) in {options.images} were unreadable")

    results = collector.result()
    write_task1_dir(out, results, predictor.classes)
    summary = InferenceSummary(
        num_images=len(collector.image_ids), num_unreadable=len(unreadable), unreadable=unreadable,
        num_detections=collector.num_detections, task1_dir=out, seconds=0.0,
        pictures_dir=out / "pictures" if options.pictures else None)

    merged: dict[str, ClassDetections] | None = None
    scene_ids = None if options.scenes else _patch_scene_ids(collector.image_ids)
    if scene_ids is not None:
        merged = merge_detections(results, nms_thresh=options.merge_nms_thresh)
        summary.merged_dir = out / "merged"
        write_task1_dir(summary.merged_dir, merged, predictor.classes)
        logger.info("patch names follow <id>__<rate>__<left>___<up>: merged %d patch(es) into %d scene(s) "
                    "in %s", len(collector.image_ids), len(scene_ids), summary.merged_dir)

    if options.zip:
        source = summary.merged_dir if summary.merged_dir is not None else out
        summary.zip_path = zip_task1_dir(source, out / "task1.zip", predictor.classes)
        logger.info("wrote %s", summary.zip_path)

    if options.eval_labels is not None:
        label_dir = Path(options.eval_labels)
        dets, ids, level = results, collector.image_ids, "image"
        if (merged is not None and scene_ids is not None
                and _has_labels(label_dir, scene_ids) > _has_labels(label_dir, collector.image_ids)):
            dets, ids, level = merged, scene_ids, "merged scene"
        result, missing = evaluate_results(dets, ids, label_dir, predictor.classes)
        summary.eval_result, summary.eval_level = result, level
        summary.eval_json = out / "eval.json"
        write_result_json(summary.eval_json, result, {
            "level": level, "label_dir": str(label_dir), "images": len(ids),
            "images_without_labels": missing, "unreadable_images": unreadable})
    summary.seconds = time.perf_counter() - start
    return summary
