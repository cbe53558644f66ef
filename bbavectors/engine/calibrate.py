r"""Centre calibration: the constant offset between where the labels put object centres and where
the trained network puts them, measured on training images and added by the decoder.

Why a trained network cannot learn it
-------------------------------------
Flips and quarter turns (``augment.hflip``, ``vflip``, ``rot90``) map the image and its labels
exactly. If a data set's labels sit a constant ``(dx, dy)`` pixels from the objects' visible
centres (a labelling tool's pixel convention, or a habit of the annotators), a horizontal flip turns
that offset into ``(-dx, dy)``, a vertical one into ``(dx, -dy)``, a quarter turn swaps the axes:
over the augmented images the offset averages out, and the network learns the visible centre. On
SSDD (SAR ships) the labels sit about 0.6 px left of and 1.0 px above the ships' echoes; that
offset, measured on training images and added to the decoded boxes, raised VOC07 AP from 0.846 to
0.869 (docs/benchmarks.md, eighteenth round).

What is measured
----------------
After the last epoch (``train.calibrate_centres``), the model as saved (EMA weights when
``train.ema``) predicts up to ``train.calibration_images`` training images **without augmentation**,
through the inference path (:func:`~bbavectors.inference.collect.predict_image_files`). Each
non-difficult labelled object is paired with the same-class detection of highest polygon IoU, when
that IoU is at least :data:`MATCH_IOU` and the score at least :data:`MATCH_SCORE`; the centre
difference (label minus detection, each the mean of its four corners) is converted to
network-input pixels (times the image's letterbox scale). The per-axis **median** over the pairs is
added to ``decode.centre_shift`` (so a second calibration measures what the first left).

Fewer than :data:`MIN_MATCHES` pairs leave the shift unchanged (logged): a median of a few pairs is
noise (a pair's own offset spreads by about 2 px on SSDD).

Example::

    >>> import numpy as np
    >>> square = np.array([[0, 0, 10, 0, 10, 10, 0, 10]], float)
    >>> box_centres(square)
    array([[5., 5.]])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from DOTA_devkit.geometry import poly_iou_matrix
from DOTA_devkit.labels import LabelFile

from ..config import save_config
from ..data.letterbox import letterbox_params
from ..inference.collect import predict_image_files
from ..inference.predictor import Predictor, amp_mode_of
from ..runtime import unwrap_model
from .distributed import broadcast_object

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["CentreCalibration", "measure_centre_offset", "box_centres", "centre_differences",
           "calibration_items", "calibrate_run", "MATCH_IOU", "MATCH_SCORE", "MIN_MATCHES"]

logger = logging.getLogger(__name__)

#: A label and a detection pair up at this polygon IoU or more.
MATCH_IOU = 0.5
#: Only detections scored this much or more are paired (confident, well-placed boxes).
MATCH_SCORE = 0.3
#: Fewer pairs than this leave the shift unchanged.
MIN_MATCHES = 100


@dataclass(frozen=True)
class CentreCalibration:
    """What :func:`measure_centre_offset` found.

    Attributes:
        offset: ``(dx, dy)`` median of label centre minus detected centre, network-input pixels;
            (0, 0) when there were too few pairs.
        matches: label / detection pairs measured.
        images: images predicted (unreadable ones left out).
        spread: ``(x, y)`` median absolute deviation of the pairs' differences.
        applied: whether the pairs were enough (:data:`MIN_MATCHES`) for the offset to count.
        seconds: wall time of the measurement.
    """

    offset: tuple[float, float]
    matches: int
    images: int
    spread: tuple[float, float]
    applied: bool
    seconds: float

    def describe(self) -> str:
        """One log line."""
        if not self.applied:
            return (f"centre calibration: {self.matches} label/detection pair(s) on {self.images} training "
                    f"image(s), fewer than {MIN_MATCHES}: decode.centre_shift unchanged")
        return (f"centre calibration on {self.matches} label/detection pairs ({self.images} training images, "
                f"{self.seconds:.1f} s): labels sit ({self.offset[0]:+.2f}, {self.offset[1]:+.2f}) px from "
                f"the decoded centres (spread {self.spread[0]:.2f} / {self.spread[1]:.2f} px)")


def box_centres(polygons: NDArray[Any]) -> NDArray[np.float64]:
    """``(N, 8)`` quadrilaterals -> ``(N, 2)`` centres (mean of the four corners)."""
    p = np.asarray(polygons, dtype=np.float64).reshape(-1, 4, 2)
    return p.mean(axis=1)  # type: ignore[no-any-return]


def centre_differences(
    labels: NDArray[Any], detections: NDArray[Any], scores: NDArray[Any],
    iou_thresh: float = MATCH_IOU, score_thresh: float = MATCH_SCORE,
) -> NDArray[np.float64]:
    """Label centre minus paired detection centre, one row per paired label, in the inputs' pixels.

    Args:
        labels: ``(N, 8)`` polygons of one image and class; detections: ``(M, 8)``; scores: ``(M,)``.
    Returns:
        ``(P, 2)``: each label paired with its highest-IoU detection scored at least
        ``score_thresh``, when that IoU is at least ``iou_thresh`` (a detection may serve two labels:
        the best box per label is what the decoder answers for it).
    """
    labels = np.asarray(labels, dtype=np.float64).reshape(-1, 8)
    keep = np.asarray(scores, dtype=np.float64).reshape(-1) >= score_thresh
    dets = np.asarray(detections, dtype=np.float64).reshape(-1, 8)[keep]
    if len(labels) == 0 or len(dets) == 0:
        return np.zeros((0, 2))
    iou = poly_iou_matrix(labels, dets)
    best = iou.argmax(axis=1)
    paired = iou[np.arange(len(labels)), best] >= iou_thresh
    return box_centres(labels[paired]) - box_centres(dets[best[paired]])  # type: ignore[no-any-return]


def measure_centre_offset(
    predictor: Predictor,
    items: Sequence[tuple[str, Path]],
    ground_truth: Mapping[str, LabelFile],
    classes: Sequence[str],
    workers: int = 0,
    progress: bool = False,
) -> CentreCalibration:
    """Predict ``items`` with ``predictor`` and measure the labels' centre offset (module docstring).

    Args:
        predictor: wraps the trained model; its ``decode.centre_shift`` is already in the detections,
            so the result is what remains on top of it.
        items: ``(image id, path)`` of the images to measure (training images, no augmentation).
        ground_truth: ``{image id: LabelFile}`` in original pixels.
        classes: the class list (a detection's class index names its label class).
    """
    start = time.perf_counter()
    scales: dict[str, float] = {}

    def note_scale(image_id: str, original: NDArray[np.uint8] | None, dets: Mapping[str, Any]) -> None:
        assert original is not None
        scales[image_id] = letterbox_params(original.shape[0], original.shape[1], predictor.input_size).scale

    # The collector keeps every image's detections (numpy, original pixels): nothing else to store.
    run = predict_image_files(predictor, items, workers=workers, progress=progress, on_image=note_scale,
                              keep_originals=True, keep_images=len(items), desc="calibrate")
    diffs = []
    for image_id, dets in run.collector.kept.items():
        label = ground_truth[image_id]
        names = np.array(label.class_names())
        usable = label.difficult() == 0
        for k, name in enumerate(classes):
            wanted = usable & (names == name)
            sel = dets["classes"] == k
            if not wanted.any() or not sel.any():
                continue
            d = centre_differences(label.polygons()[wanted], dets["polygons"][sel], dets["scores"][sel])
            diffs.append(d * scales[image_id])
    both = np.concatenate(diffs) if diffs else np.zeros((0, 2))
    applied = len(both) >= MIN_MATCHES
    offset = np.median(both, axis=0) if len(both) else np.zeros(2)
    spread = np.median(np.abs(both - offset), axis=0) if len(both) else np.zeros(2)
    if not applied:
        offset = np.zeros(2)
    return CentreCalibration((float(offset[0]), float(offset[1])), len(both), len(run.collector.image_ids),
                             (float(spread[0]), float(spread[1])), applied, time.perf_counter() - start)


def calibration_items(dataset: Any, count: int) -> list[tuple[str, Path]]:
    """``count`` images spread evenly over a data set's records (all of them when it has fewer)."""
    records = list(dataset.records)
    if len(records) <= count:
        chosen = records
    else:
        chosen = [records[int(i)] for i in np.linspace(0, len(records) - 1, count).round()]
    return [(r.image_id, Path(r.path)) for r in chosen]


def _measure(tr: Trainer) -> CentreCalibration:
    """Rank 0: the offset measured with the weights that are saved (EMA when enabled), on top of the
    ``decode.centre_shift`` in force."""
    t = tr.cfg.train
    model = tr.ema.module if tr.ema is not None else unwrap_model(tr.model)
    was_training = model.training
    try:
        predictor = Predictor(model, tr.cfg, tr.classes, device=tr.device, batch_size=t.batch_size,
                              amp=amp_mode_of(tr.amp_dtype), channels_last=tr.channels_last)
        result = measure_centre_offset(predictor, calibration_items(tr.train_set, t.calibration_images),
                                       tr.train_set.ground_truth(), tr.classes,
                                       workers=min(tr.cfg.data.workers, 2), progress=tr.progress)
    finally:
        model.train(was_training)
    logger.info(result.describe())
    return result


def _record(result: CentreCalibration) -> dict[str, float]:
    return {"offset_x": result.offset[0], "offset_y": result.offset[1], "matches": float(result.matches),
            "images": float(result.images), "spread_x": result.spread[0], "spread_y": result.spread[1],
            "applied": float(result.applied), "seconds": result.seconds}


def calibrate_run(tr: Trainer) -> CentreCalibration | None:
    """The end-of-training calibration of a :class:`~bbavectors.engine.trainer.Trainer`: rank 0
    measures with the weights that are saved (EMA when enabled), every rank gets the new
    ``decode.centre_shift``; ``config.yaml`` is rewritten. None when ``train.calibrate_centres`` is off
    (or on the other ranks)."""
    if not tr.cfg.train.calibrate_centres:
        return None
    result = None
    shift = tuple(tr.cfg.decode.centre_shift)
    if tr.dist.is_main:
        result = _measure(tr)
        if result.applied:
            shift = (shift[0] + result.offset[0], shift[1] + result.offset[1])
            logger.info("decode.centre_shift = (%.3f, %.3f) input px", *shift)
        tr.metrics.log("calibration", tr.step, tr.epoch, {
            **_record(result), "centre_shift_x": shift[0], "centre_shift_y": shift[1]})
        tr.budget.saw_calibration(result.seconds)
    shift = broadcast_object(shift)
    tr.cfg.decode.centre_shift = (float(shift[0]), float(shift[1]))
    if tr.dist.is_main:
        save_config(tr.cfg, tr.run_dir / "config.yaml")
    return result


def shift_training_labels(tr: Trainer) -> CentreCalibration | None:
    """The mid-run pass of ``train.label_shift_at``: measure the offset as :func:`calibrate_run` does,
    and when enough pairs were found move the training labels onto the centres the network has
    learnt (``augment.label_shift``), so that from here on flips no longer turn the labels' offset
    into noise; the final calibration then measures the whole offset for the decoder. Every rank
    rebuilds its training loader (the workers hold a copy of the augmentation settings);
    ``config.yaml`` is rewritten. Returns rank 0's measurement (None on the other ranks).

    With the network's centres ``c_net = label - offset - centre_shift`` the new shift is
    ``c_net - label = -(offset + centre_shift)``: it replaces, not adds to, any shift in force, since
    a network trained on shifted labels has learnt that shift.
    """
    result = None
    update: tuple[float, float] | None = None
    if tr.dist.is_main:
        result = _measure(tr)
        centre = tr.cfg.decode.centre_shift
        if result.applied:
            update = (-(result.offset[0] + centre[0]), -(result.offset[1] + centre[1]))
            logger.info("augment.label_shift = (%.3f, %.3f) input px: the training labels follow the "
                        "network's centres from step %d", *update, tr.step)
        current = update if update is not None else tuple(tr.cfg.augment.label_shift)
        tr.metrics.log("label_shift", tr.step, tr.epoch, {
            **_record(result), "label_shift_x": current[0], "label_shift_y": current[1]})
    update, seconds = broadcast_object((update, result.seconds if result is not None else 0.0))
    if update is None:
        return result
    tr.budget.saw_label_shift(seconds)
    tr.cfg.augment.label_shift = (float(update[0]), float(update[1]))
    tr.labels_shifted = True
    tr.rebuild_train_loader()
    if tr.dist.is_main:
        save_config(tr.cfg, tr.run_dir / "config.yaml")
    return result
