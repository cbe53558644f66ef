"""Checks on the training and validation data, run once before the run folder exists.

- A split whose labels give no usable object (e.g. every class unknown to the class list) stops the
  run with one line (:class:`~bbavectors.engine.run_setup.RunSetupError`), never trains on nothing.
- When more than :data:`SKIPPED_WARN_SHARE` of the label lines were skipped (unknown class, bad
  polygon...), a WARNING says so (the share also goes into the run summary).
- The validation images must decode: all of them when there are at most :data:`DECODE_ALL_UP_TO`,
  else every file must exist and a fixed random sample of that many must decode (so a broken
  validation split fails at start, not after the first epoch).
"""

from __future__ import annotations

import logging

import numpy as np

from ..data.dataset import DotaDataset
from ..data.image_io import read_image
from .run_setup import RunSetupError

__all__ = ["SKIPPED_WARN_SHARE", "DECODE_ALL_UP_TO", "skipped_share", "check_objects",
           "check_images_readable"]

logger = logging.getLogger(__name__)

SKIPPED_WARN_SHARE = 0.2
DECODE_ALL_UP_TO = 200


def skipped_share(dataset: DotaDataset) -> float:
    """Skipped label lines / (kept objects + skipped lines), 0 when there were none."""
    report = dataset.label_report
    skipped = sum(report.skipped().values())
    total = report.objects + skipped
    return skipped / total if total else 0.0


def check_objects(dataset: DotaDataset, what: str) -> float:
    """Fail when ``dataset`` has no usable object; warn when many were skipped; returns the skipped share.

    Raises:
        RunSetupError: not one object in the split.
    """
    report = dataset.label_report
    if sum(dataset.class_counts().values()) == 0:
        raise RunSetupError(
            f"{what} split {dataset.split} of {dataset.root}: no usable object in {len(dataset)} image(s) "
            f"({report.summary()}); check the labels and the class list (--classes, classes.txt)")
    share = skipped_share(dataset)
    if share > SKIPPED_WARN_SHARE:
        logger.warning("%s split %s: %.0f%% of the objects were skipped (%s): check the labels and the "
                       "class list", what, dataset.split, 100 * share, report.summary())
    return share


def check_images_readable(dataset: DotaDataset, what: str, limit: int = DECODE_ALL_UP_TO) -> None:
    """Every image file exists; all (or a sample of ``limit``) decode.

    Raises:
        RunSetupError: names the first bad file and how many were bad.
    """
    records = dataset.records
    missing = [r.path for r in records if not r.path.is_file()]
    if missing:
        raise RunSetupError(f"{what} split: {len(missing)} of {len(records)} image file(s) missing, "
                            f"e.g. {missing[0]}")
    indices = np.arange(len(records))
    if len(records) > limit:
        indices = np.sort(np.random.default_rng(0).choice(len(records), limit, replace=False))
    bad: list[str] = []
    for i in indices:
        try:
            read_image(records[int(i)].path)
        except OSError as e:
            bad.append(str(e).splitlines()[0] if str(e) else str(records[int(i)].path))
    if bad:
        raise RunSetupError(f"{what} split: {len(bad)} of {len(indices)} image(s) checked cannot be read, "
                            f"e.g. {bad[0]}")
