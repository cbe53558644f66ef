"""DataLoader construction for :class:`~bbavectors.data.dataset.DotaDataset` (or any map-style set).

Batches hold uint8 images (4x less to copy than float; normalisation runs on the device with
:func:`bbavectors.data.letterbox.normalize_images`), pinned when CUDA is available.

Workers: kept alive across epochs (``persistent_workers``); each one turns OpenCV's own thread
pool and OpenCL off (``N`` workers x ``M`` OpenCV threads would oversubscribe the cores) and seeds
``random``, ``numpy`` and the data set's augmentation generator from torch's per-worker seed,
which derives from ``seed``: runs are repeatable, workers draw different augmentations.

Distributed training: ``distributed=True`` uses a ``DistributedSampler`` (it shuffles, so the
loader itself does not); call ``loader.sampler.set_epoch(epoch)`` at the start of every epoch,
otherwise each epoch repeats the same order. ``drop_last`` applies to the sampler and the loader.
"""

from __future__ import annotations

import random
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from .dataset import collate_samples

__all__ = ["build_dataloader", "worker_init", "PREFETCH_FACTOR"]

#: Batches prepared ahead per worker: enough to hide jitter, little pinned memory.
PREFETCH_FACTOR = 2


def worker_init(worker_id: int) -> None:
    """``worker_init_fn``: single-threaded OpenCV without OpenCL, per-worker seeds."""
    cv2.setNumThreads(0)
    cv2.ocl.setUseOpenCL(False)
    info = get_worker_info()
    seed = info.seed if info is not None else torch.initial_seed() + worker_id
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (third-party code may use the legacy global)
    dataset = info.dataset if info is not None else None
    reseed = getattr(dataset, "reseed", None)
    if callable(reseed):
        reseed(seed)


def build_dataloader(
    dataset: Dataset[Any],
    batch_size: int,
    shuffle: bool,
    workers: int,
    distributed: bool = False,
    drop_last: bool = False,
    seed: int = 0,
) -> DataLoader[Any]:
    """A DataLoader yielding :func:`~bbavectors.data.dataset.collate_samples` batches.

    Args:
        dataset: map-style data set.
        batch_size: images per batch (per process when distributed).
        shuffle: reshuffle each epoch (through the sampler when distributed).
        workers: worker processes; 0 loads in the main process.
        distributed: shard with ``DistributedSampler`` (needs an initialised process group);
            call ``loader.sampler.set_epoch(epoch)`` every epoch.
        drop_last: drop the last incomplete batch (and the uneven tail of the shards).
        seed: base seed of the shuffling and of the workers' augmentation.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    reseed = getattr(dataset, "reseed", None)
    if workers == 0 and callable(reseed):
        # No worker_init_fn runs in the main process: seed the augmentation here instead.
        reseed(seed)
    sampler: DistributedSampler[Any] | None = None
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_samples,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        worker_init_fn=worker_init,
        generator=generator,
        persistent_workers=workers > 0,
        prefetch_factor=PREFETCH_FACTOR if workers > 0 else None,
    )
