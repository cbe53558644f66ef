"""DOTA-format data sets: ``<root>/images/*.png|jpg|...``, ``<root>/labelTxt/<id>.txt``, split files.

Layout (``docs/data.md``)::

    root/
      images/P0001.png ...          image id = file name without suffix
      labelTxt/P0001.txt ...        DOTA labelTxt (DOTA_devkit.labels)
      trainval.txt, val.txt, ...    split files: one image id per line, '#' comments, blank lines ok
      classes.txt                   optional: used when no class list is given

Construction parses every label file once (cheap) into numpy arrays and reports, via logging,
one :meth:`LabelReport.summary` line; each skipped label line (unknown class, malformed,
degenerate polygon) is logged with file and line by the parser (``strict_labels=True`` raises
instead). A split id without an image file is reported and skipped; an image without a label file
is an image with no objects (logged once with the count) unless ``require_labels=True``.

Reading: each sample's image is decoded once (:func:`bbavectors.data.image_io.read_image`). An
unreadable image raises :class:`ImageReadError` naming the file, unless ``replace_unreadable`` (the
default for training only, i.e. with ``augment``): then it is logged (path and reason), remembered,
counted in :attr:`DotaDataset.num_unreadable`, and ``__getitem__`` returns the next readable sample
instead (at most ``max_retries`` further tries, then a ``RuntimeError`` naming the files); every
such replacement is logged and counted in :attr:`DotaDataset.num_replaced`, so one corrupt file never
kills a long training run yet never goes unnoticed. An evaluation reader never replaces: a
replaced image would be scored against another image's labels. The counts are per process (each
loader worker keeps its own; the warnings reach the log from every worker); each training sample
also says whether it is a replacement (``replaced``), so the batch carries the count to the main
process (``num_replaced`` of :func:`collate_samples`) and the trainer reports the run's total.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from DOTA_devkit.classes import read_class_file
from DOTA_devkit.image_io import list_images
from DOTA_devkit.image_sets import read_split_file
from DOTA_devkit.labels import DotaObject, LabelFile, LabelReport, read_dota_label

from ..config import AugmentConfig
from .image_io import ImageReadError, read_image
from .transforms import DEFAULT_MIN_VISIBLE, augment_sample, letterbox_sample

__all__ = ["DotaDataset", "ImageRecord", "collate_samples", "read_split_file", "list_images"]

logger = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    """One image and its parsed objects (arrays in original-image pixels)."""

    image_id: str
    path: Path
    polygons: NDArray[np.float64]  # (N, 8)
    classes: NDArray[np.int64]  # (N,)
    difficult: NDArray[np.int64]  # (N,)
    has_labels: bool


class DotaDataset(Dataset[dict[str, Any]]):
    """DOTA-format data set yielding letterboxed (training: augmented) samples.

    Args:
        root: folder with ``image_dir``, ``label_dir`` and split files.
        split: split name (reads ``<root>/<split>.txt``), a path to a split file, or None for every
            image in ``<root>/<image_dir>``.
        classes: class list (index = heatmap channel); None reads ``<root>/classes.txt``.
        input_size: network input side ``S``.
        augment: None = evaluation (exactly ``letterbox_image``); a config = training.
        strict_labels: raise on the first label problem instead of skipping it.
        image_dir, label_dir: sub-folder names.
        require_labels: a missing label file is an error instead of an empty image.
        min_visible: training only: objects cut to less than this area fraction become difficult.
        max_retries: unreadable images skipped in a row before ``__getitem__`` gives up.
        replace_unreadable: return the next readable sample for an unreadable image (logged and
            counted) instead of raising :class:`ImageReadError`; None (default): only for training
            (``augment`` given). Never set it for validation or testing.

    Item (dict): ``image`` uint8 ``(3, S, S)`` RGB; ``polygons`` float32 ``(N, 8)`` in network-input
    pixels; ``classes`` int64 ``(N,)``; ``difficult`` int64 ``(N,)``; ``image_id`` str;
    ``orig_size`` ``(h, w)``; ``letterbox`` float32 ``(3,)`` ``[scale, pad_x, pad_y]`` of the
    evaluation letterbox (in training, polygons already include the augmentation; the letterbox
    tensor stays that of the un-augmented image).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Path | None = None,
        classes: Sequence[str] | None = None,
        input_size: int = 608,
        augment: AugmentConfig | None = None,
        strict_labels: bool = False,
        image_dir: str = "images",
        label_dir: str = "labelTxt",
        require_labels: bool = False,
        min_visible: float = DEFAULT_MIN_VISIBLE,
        max_retries: int = 10,
        replace_unreadable: bool | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data set folder not found: {self.root}")
        if input_size <= 0:
            raise ValueError(f"input_size must be positive, got {input_size}")
        self.classes: tuple[str, ...] = tuple(classes) if classes is not None else self._default_classes()
        self.input_size = int(input_size)
        self.augment = augment
        self.min_visible = float(min_visible)
        self.max_retries = int(max_retries)
        self.replace_unreadable = (augment is not None) if replace_unreadable is None else replace_unreadable
        self.num_replaced = 0
        self.split = split
        self.label_report = LabelReport()
        self.missing_images: list[str] = []
        self.missing_labels: list[str] = []
        self.num_unreadable = 0
        self._unreadable: set[str] = set()
        self._rng: np.random.Generator | None = None
        self._rng_pid = -1
        images = list_images(self.root / image_dir)
        ids = self._select_ids(images, split)
        self.records = self._parse_labels(images, ids, self.root / label_dir, strict_labels, require_labels)
        if not self.records:
            raise ValueError(f"no images to use in {self.root / image_dir}"
                             + (f" for split {split!r}" if split is not None else ""))

    # ----------------------------------------------------------------------------- construction
    def _default_classes(self) -> tuple[str, ...]:
        path = self.root / "classes.txt"
        if not path.is_file():
            raise ValueError(f"no class list given and {path} does not exist")
        return read_class_file(path)

    def _select_ids(self, images: dict[str, Path], split: str | Path | None) -> list[str]:
        if split is None:
            return sorted(images)
        split_path = Path(split)
        if not (split_path.suffix == ".txt" and split_path.is_file()):
            split_path = self.root / f"{split}.txt"
        if not split_path.is_file():
            raise FileNotFoundError(f"split file not found: {split_path}")
        listed = read_split_file(split_path)
        self.missing_images = [i for i in listed if i not in images]
        if self.missing_images:
            logger.warning("%s: %d image id(s) have no image file and are skipped (e.g. %s)",
                           split_path, len(self.missing_images), ", ".join(self.missing_images[:5]))
        return [i for i in listed if i in images]

    def _parse_labels(
        self, images: dict[str, Path], ids: list[str], label_dir: Path, strict: bool, require: bool
    ) -> list[ImageRecord]:
        records = []
        for image_id in ids:
            label_path = label_dir / f"{image_id}.txt"
            if not label_path.is_file():
                self.missing_labels.append(image_id)
                records.append(ImageRecord(image_id, images[image_id], np.zeros((0, 8)),
                                           np.zeros(0, np.int64), np.zeros(0, np.int64), False))
                continue
            lf = read_dota_label(label_path, classes=self.classes, strict=strict, report=self.label_report)
            records.append(ImageRecord(image_id, images[image_id], lf.polygons(),
                                       lf.class_ids(self.classes), lf.difficult(), True))
        if self.missing_labels:
            if require:
                raise FileNotFoundError(
                    f"{len(self.missing_labels)} image(s) have no label file in {label_dir} "
                    f"(e.g. {self.missing_labels[0]}.txt) and require_labels=True")
            logger.info("%d of %d image(s) have no label file in %s: treated as images without objects",
                        len(self.missing_labels), len(ids), label_dir)
        logger.info("%s%s: %d image(s); labels: %s", self.root,
                    f" [{self.split}]" if self.split is not None else "", len(records),
                    self.label_report.summary())
        return records

    # ------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_ids(self) -> list[str]:
        return [r.image_id for r in self.records]

    def class_counts(self) -> Counter[str]:
        """Objects per class name over the whole data set."""
        counts: Counter[str] = Counter()
        for r in self.records:
            counts.update(self.classes[c] for c in r.classes)
        return counts

    def label_file(self, index: int) -> LabelFile:
        """The parsed labels of one image (original pixels), e.g. for evaluation."""
        r = self.records[index]
        return LabelFile([DotaObject(p.copy(), self.classes[int(c)], int(d))
                          for p, c, d in zip(r.polygons, r.classes, r.difficult)])

    def ground_truth(self) -> dict[str, LabelFile]:
        """``{image id: LabelFile}`` for every image, the input of ``DOTA_devkit.eval``."""
        return {r.image_id: self.label_file(i) for i, r in enumerate(self.records)}

    def reseed(self, seed: int) -> None:
        """Seed this process's augmentation generator (called by the loader's worker_init_fn)."""
        self._rng = np.random.default_rng(seed)
        self._rng_pid = os.getpid()

    def _generator(self) -> np.random.Generator:
        # A generator copied into a forked worker would repeat the parent's draws in every
        # worker; re-derive it in each process from torch's per-worker seed.
        if self._rng is None or self._rng_pid != os.getpid():
            self.reseed(torch.initial_seed())
        assert self._rng is not None
        return self._rng

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        if not self.replace_unreadable:
            return self.load_sample(index)
        errors: list[str] = []
        for attempt in range(self.max_retries + 1):
            i = (index + attempt) % n
            record = self.records[i]
            if record.image_id in self._unreadable:
                continue
            try:
                sample = self.load_sample(i)
            except ImageReadError as e:
                self._unreadable.add(record.image_id)
                self.num_unreadable += 1
                errors.append(str(e))
                logger.warning("skipped unreadable image (%d so far in this process): %s",
                               self.num_unreadable, e)
                continue
            sample["replaced"] = bool(attempt)
            if attempt:
                self.num_replaced += 1
                logger.warning("training sample %s replaced by %s: its image is unreadable "
                               "(%d replacement(s) so far in this process)",
                               self.records[index].image_id, record.image_id, self.num_replaced)
            return sample
        raise RuntimeError(f"no readable image among {self.max_retries + 1} tried from index {index}: "
                           + "; ".join(errors[-3:]))

    def load_sample(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Build sample ``index`` (no skipping: raises ``ImageReadError`` for a bad image).

        Args:
            rng: augmentation random source; default this process's generator.
        """
        record = self.records[index]
        image = read_image(record.path)
        h, w = image.shape[:2]
        if self.augment is None:
            canvas, polygons, params = letterbox_sample(image, record.polygons, self.input_size)
            classes, difficult = record.classes, record.difficult
        else:
            aug = augment_sample(image, record.polygons, record.difficult, self.input_size, self.augment,
                                 rng if rng is not None else self._generator(), self.min_visible)
            canvas, polygons, params = aug.image, aug.polygons, aug.letterbox
            classes, difficult = record.classes[aug.keep], aug.difficult
        return {
            "image": torch.from_numpy(canvas).permute(2, 0, 1).contiguous(),
            "polygons": torch.from_numpy(np.ascontiguousarray(polygons, dtype=np.float32).reshape(-1, 8)),
            "classes": torch.from_numpy(np.asarray(classes, dtype=np.int64).copy()),
            "difficult": torch.from_numpy(np.asarray(difficult, dtype=np.int64).copy()),
            "image_id": record.image_id,
            "orig_size": (h, w),
            "letterbox": params.as_tensor(),
        }


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples of :class:`DotaDataset`.

    Returns:
        ``images`` uint8 ``(B, 3, S, S)``; ``polygons`` / ``classes`` / ``difficult``: lists of B
        tensors (objects per image vary); ``image_ids`` list[str]; ``orig_sizes`` list of
        ``(h, w)``; ``letterbox`` float32 ``(B, 3)``; ``num_replaced``: samples standing in for an
        unreadable image.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    images: Tensor = torch.stack([s["image"] for s in samples])
    return {
        "images": images,
        "polygons": [s["polygons"] for s in samples],
        "classes": [s["classes"] for s in samples],
        "difficult": [s["difficult"] for s in samples],
        "image_ids": [s["image_id"] for s in samples],
        "orig_sizes": [tuple(s["orig_size"]) for s in samples],
        "letterbox": torch.stack([s["letterbox"] for s in samples]),
        "num_replaced": sum(bool(s.get("replaced", False)) for s in samples),
    }
