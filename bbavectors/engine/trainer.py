r"""The training loop: data -> device -> targets -> model -> loss -> optimiser, with validation,
checkpoints, metrics, mixed precision and multi-GPU (DDP under ``torchrun``).

One step
--------
Loader workers only decode and augment: a batch is uint8 images ``(B, 3, S, S)`` and per-image
polygon / class / difficult tensors (pinned when CUDA exists). On the device, in this order:
``non_blocking`` copies, :func:`~bbavectors.data.letterbox.normalize_images`, channels_last (CUDA),
:func:`bbavectors.targets.encode_targets` (batched, on the device), the model under autocast (bf16,
or fp16 with a ``GradScaler``), :class:`bbavectors.losses.BBAVLoss` (float32), backward, gradient
clipping (``train.grad_clip``, the norm is always measured), optimiser step, EMA update, then the
per-step learning-rate schedule (:mod:`bbavectors.engine.optim`).

Non-finite losses
-----------------
The step's loss and gradient norm are summed over ranks (one small all-reduce, so every rank takes
the same decision). When either is NaN or infinite the step is skipped: no optimiser step, gradients
zeroed, BatchNorm running statistics restored to their values before the step; schedule and step
count advance as usual (the learning-rate curve depends on the step index only), the skip is
counted and logged. ``train.max_nonfinite`` skips **in a row** stop the run with
:class:`NonFiniteLossError` naming the step and the loss parts. (With fp16 the GradScaler's own
skips for overflowing *gradients* are expected and not counted; a non-finite *loss* is.)

Epochs, validation, checkpoints
-------------------------------
Each epoch's order is a function of ``(train.seed, epoch)`` (``DistributedSampler.set_epoch``, or
the loader's generator re-seeded), so a resumed run sees the same order as an uninterrupted one;
augmentation draws are repeatable too with ``data.workers = 0`` (with workers they come from the
workers' own streams, which restart on resume). Validation runs every ``train.val_every`` epochs and
after the last, on rank 0, with the EMA weights when ``train.ema`` (:mod:`~bbavectors.engine.validate`).
After every epoch rank 0 writes ``last.pt`` (model, optimizer, scheduler, scaler, epoch, step,
best mAP, EMA, config, class names) and, when the validation VOC07 mAP improved, ``best.pt``: best
by validation mAP, never by training loss. ``resume`` continues from a ``last.pt``: same run folder,
same step count, same learning-rate curve.

Run folder ``runs/<name>/``: ``config.yaml``, ``last.pt``, ``best.pt``, ``metrics.jsonl``, ``tb/``
(TensorBoard), ``predictions/<image_id>.png`` (ground truth | predictions of the last validation).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from DOTA_devkit.classes import load_class_list

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import Config, apply_overrides, config_from_dict, load_config, save_config
from ..data.dataset import DotaDataset
from ..data.image_io import read_image
from ..data.letterbox import normalize_images
from ..data.loader import build_dataloader
from ..losses import BBAVLoss
from ..models.builder import build_model
from ..runtime import (
    AMP_MODES,
    autocast_context,
    configure_cpu_threads,
    resolve_amp,
    resolve_device,
    unwrap_model,
)
from ..targets import encode_targets
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    read_dist_env,
)
from .draw import prediction_picture, save_picture
from .ema import ModelEMA
from .metrics_log import MetricsLogger
from .optim import build_optimizer, build_scheduler, effective_lr
from .validate import ValidationResult, run_validation

__all__ = [
    "AMP_MODES",
    "LOSS_PARTS",
    "NonFiniteLossError",
    "TrainResult",
    "Trainer",
    "resolve_amp",
    "configure_cpu_threads",
    "build_train_config",
    "PreparedRun",
    "prepare_run",
    "default_run_name",
    "create_run_dir",
    "resolve_data_root",
    "resolve_classes",
    "QUICK_CONFIG",
]

logger = logging.getLogger(__name__)

LOSS_PARTS: tuple[str, ...] = ("hm", "wh", "reg", "cls_theta")
#: The short schedule used when no data set and no config are given (repository checkout).
QUICK_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_quick.yaml"
#: Detections drawn in prediction pictures score at least this (mAP uses every detection).
PICTURE_SCORE_THRESH = 0.3
#: Events passed to the ``hook`` callable.
HOOK_EVENTS: tuple[str, ...] = ("step", "epoch", "validation", "checkpoint")

Hook = Callable[[str, "Trainer"], None]


class NonFiniteLossError(RuntimeError):
    """``train.max_nonfinite`` steps in a row had a NaN / infinite loss or gradient."""


# ------------------------------------------------------------------------------- configuration
def build_train_config(
    config_path: str | Path | None,
    overrides: Sequence[str],
    data_root: str | None = None,
    quick_config: str | Path | None = QUICK_CONFIG,
) -> Config:
    """The one builder of a training config: ``load_config -> apply_overrides -> Config``.

    Args:
        config_path: YAML file; None with no ``data_root`` loads ``quick_config`` (the embedded
            short schedule on the synthetic set), None with a data root the defaults.
        overrides: ``section.key=value`` items, applied in order (flags are turned into these).
        data_root: the data set folder (``--data``); None trains on the built-in synthetic set.
    Raises:
        ConfigError: unknown keys or bad values (the message names them).
        FileNotFoundError: a config file that does not exist.
    """
    if config_path is None and data_root is None and quick_config is not None:
        if not Path(quick_config).is_file():
            raise FileNotFoundError(f"the built-in quick schedule {quick_config} is missing: pass --config")
        config_path = quick_config
    cfg = load_config(config_path)
    items = list(overrides)
    if data_root is not None:
        items.append(f"data.root={data_root}")
    cfg = apply_overrides(cfg, items)
    if cfg.data.root is None and cfg.data.classes != "synthetic":
        logger.info("no data set given: training on the built-in synthetic set, so data.classes=synthetic")
        cfg = apply_overrides(cfg, ["data.classes=synthetic"])
    return cfg


def resolve_data_root(cfg: Config) -> Path:
    """``data.root``, or the cached built-in synthetic set (generated on first use) when None."""
    if cfg.data.root is None:
        from ..data.synthetic import ensure_default_dataset

        return ensure_default_dataset()
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder not found: {root} (data.root / --data)")
    return root


def resolve_classes(spec: str, root: Path) -> tuple[str, ...]:
    """A known class list name, a class file path, or a class file relative to the data root."""
    candidate = root / spec
    if spec.lower() not in ("dota1.0", "dota1.5", "dota2.0", "hrsc2016", "synthetic") and candidate.is_file():
        return load_class_list(candidate)
    return load_class_list(spec)


def create_run_dir(runs_root: str | Path, name: str | None, default_name: str) -> Path:
    """A new run folder ``runs_root/<name>``; never reuses an existing one.

    Args:
        name: the user's ``--name`` (an existing folder of that name is an error), or None to use
            ``default_name`` (suffixed ``_2``, ``_3``... when taken).
    Raises:
        FileExistsError: ``name`` is given and exists (use ``--resume`` to continue it).
    """
    root = Path(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    if name is not None:
        path = root / name
        if path.exists():
            raise FileExistsError(f"run folder {path} exists: choose another --name, or continue it with "
                                  f"--resume {path / 'last.pt'}")
        path.mkdir()
        return path
    for k in range(1, 10_000):
        path = root / (default_name if k == 1 else f"{default_name}_{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run folder name for {default_name} in {root}")


@dataclass
class PreparedRun:
    """A resolved config, its run folder and this process's place in the job."""

    cfg: Config
    run_dir: Path
    dist: DistInfo


def prepare_run(
    config_path: str | Path | None,
    overrides: Sequence[str],
    data_root: str | None,
    runs_root: str | Path,
    name: str | None = None,
    resume: str | Path | None = None,
) -> PreparedRun:
    """Everything ``tools/train.py`` does before training: config, process group, run folder.

    A new run: :func:`build_train_config`, then rank 0 creates the folder (:func:`create_run_dir`)
    and tells the other ranks its name. A resumed run: the checkpoint's config with ``overrides``
    (and ``data_root``) applied, in the checkpoint's folder.

    Raises:
        ConfigError, FileNotFoundError, FileExistsError, ValueError: with a message for the user.
    """
    info = read_dist_env()
    if resume is not None:
        if config_path is not None:
            raise ValueError("--resume takes the run's config from the checkpoint: drop --config "
                             "(change values with flags or --set)")
        ckpt = load_checkpoint(resume, map_location="cpu")
        items = list(overrides) + ([f"data.root={data_root}"] if data_root is not None else [])
        cfg = apply_overrides(config_from_dict(ckpt["config"]), items)
        run_dir: Path | None = Path(resume).resolve().parent
        if name is not None:
            logger.warning("--name %s ignored: a resumed run stays in %s", name, run_dir)
    else:
        cfg = build_train_config(config_path, overrides, data_root)
    init_distributed(info, resolve_device(cfg.train.device, info.local_rank))
    if resume is None:
        run_dir = create_run_dir(runs_root, name, default_run_name(cfg, config_path is not None)) \
            if info.is_main else None
        run_dir = broadcast_object(run_dir)
    assert run_dir is not None
    return PreparedRun(cfg, Path(run_dir), info)


def default_run_name(cfg: Config, config_given: bool) -> str:
    """The config's name when a config file was given, else ``<backbone>_<timestamp>``."""
    if config_given and cfg.name and cfg.name != Config().name:
        return cfg.name
    backbone = cfg.model.backbone.replace(":", "-").replace("/", "-")
    return f"{backbone}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ------------------------------------------------------------------------------------ results
@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns; validation values (mAP, history) are rank 0's, None elsewhere."""

    run_dir: Path
    epochs: int
    steps: int
    best_map07: float | None
    best_epoch: int | None
    last_validation: ValidationResult | None
    nonfinite_skipped: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Meter:
    """Sums of per-step values over a logging interval or an epoch."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    images: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, values: dict[str, float], images: int) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.images += images

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.steps) for k, v in self.sums.items()}

    def images_per_second(self) -> float:
        return self.images / max(1e-9, time.perf_counter() - self.start)


# ------------------------------------------------------------------------------------ trainer
class Trainer:
    """Train CTRBOX from a :class:`Config` (module docstring).

    Args:
        cfg: the resolved config (when resuming: the checkpoint's, possibly with overrides).
        run_dir: the run folder (created by :func:`create_run_dir`, or the resumed run's folder).
        resume: a ``last.pt`` (or ``best.pt``) to continue from.
        dist_info: this process's place in a torchrun job (default: read from the environment).
        progress: tqdm bars on rank 0.
        hook: ``hook(event, trainer)`` after each event of :data:`HOOK_EVENTS` (tests use it to
            interrupt a run, or to watch it).
        log_every: steps between ``train`` records in metrics.jsonl / TensorBoard.
        num_pictures: validation images drawn into ``predictions/`` and TensorBoard.
        threads: torch CPU threads (default :func:`configure_cpu_threads`).
        validation: False skips validation even when a validation split exists (benchmarks).
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        resume: str | Path | None = None,
        dist_info: DistInfo | None = None,
        progress: bool = True,
        hook: Hook | None = None,
        log_every: int = 10,
        num_pictures: int = 4,
        threads: int | None = None,
        validation: bool = True,
    ) -> None:
        self.cfg = cfg
        self.validation = validation
        self.run_dir = Path(run_dir)
        self.resume_path = Path(resume) if resume is not None else None
        self.dist = dist_info if dist_info is not None else read_dist_env()
        self.progress = progress and self.dist.is_main
        self.hook = hook
        self.log_every = max(1, log_every)
        self.num_pictures = num_pictures
        t = cfg.train
        self.device = resolve_device(t.device, self.dist.local_rank)
        init_distributed(self.dist, self.device)
        self.threads = configure_cpu_threads(self.device, threads)
        self.amp_dtype, use_scaler = resolve_amp(t.amp, self.device)
        self.channels_last = t.channels_last and self.device.type == "cuda"
        # The same initial weights on every rank (DDP also broadcasts rank 0's; the EMA copy needs it).
        torch.manual_seed(t.seed)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser steps attempted (skipped ones included)
        self.best_map07: float | None = None
        self.best_epoch: int | None = None
        self.nonfinite_total = 0
        self.nonfinite_in_row = 0
        self.last_validation: ValidationResult | None = None
        self.history: list[dict[str, float]] = []

        self.data_root = resolve_data_root(cfg)
        self.classes = resolve_classes(cfg.data.classes, self.data_root)
        self._build_data()
        self._build_model()
        self.global_batch = t.batch_size * self.dist.world_size
        self.optimizer = build_optimizer(self.model, t, self.global_batch)
        self.scheduler = build_scheduler(self.optimizer, t, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type) if use_scaler else None
        self.ema = ModelEMA(self.model, t.ema_decay) if t.ema else None
        self.criterion = BBAVLoss(cfg.loss)
        if self.resume_path is not None:
            self._load_resume(self.resume_path)
        self._wrap_model()
        self.metrics = MetricsLogger(self.run_dir, enabled=self.dist.is_main,
                                     resume_step=self.step if self.resume_path is not None else None)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            logger.info(
                "training %s on %s: %d classes, %d train / %s val images, %d steps per epoch, "
                "global batch %d, lr %.3g (= %.3g x %d / %d), amp %s, %d CPU thread(s), world size %d",
                cfg.model.backbone, self.device, len(self.classes), len(self.train_set),
                len(self.val_set) if self.val_set is not None else "no", self.steps_per_epoch,
                self.global_batch, effective_lr(t, self.global_batch), t.lr, self.global_batch,
                t.base_batch_size, self.amp_dtype or "float32", self.threads, self.dist.world_size)

    # -------------------------------------------------------------------------------- set-up
    def _build_data(self) -> None:
        cfg = self.cfg
        d = cfg.data
        self.train_set = DotaDataset(self.data_root, d.train_split, self.classes, d.input_size,
                                     augment=cfg.augment, strict_labels=d.strict_labels)
        world_batch = cfg.train.batch_size * self.dist.world_size
        # Dropping the ragged last batch keeps BatchNorm statistics sane, unless it is all there is.
        drop_last = len(self.train_set) >= world_batch
        self.train_loader: DataLoader[Any] = build_dataloader(
            self.train_set, cfg.train.batch_size, shuffle=True, workers=d.workers,
            distributed=self.dist.distributed, drop_last=drop_last, seed=cfg.train.seed)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"no training batches: {len(self.train_set)} images for a global batch of "
                             f"{world_batch}")
        self.val_set: DotaDataset | None = None
        self.val_loader: DataLoader[Any] | None = None
        if not self.validation:
            return
        split_file = Path(d.val_split)
        if split_file.suffix != ".txt":
            split_file = self.data_root / f"{d.val_split}.txt"
        if not split_file.is_file():
            logger.warning("no validation split (%s): no validation, no mAP and no best.pt", split_file)
            return
        self.val_set = DotaDataset(self.data_root, d.val_split, self.classes, d.input_size, augment=None,
                                   strict_labels=d.strict_labels)
        if self.dist.is_main:
            self.val_loader = build_dataloader(self.val_set, cfg.train.batch_size, shuffle=False,
                                               workers=min(d.workers, 2), seed=cfg.train.seed)

    def _build_model(self) -> None:
        model = build_model(self.cfg, num_classes=len(self.classes)).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model: nn.Module = model

    def _wrap_model(self) -> None:
        """SyncBatchNorm, DDP and torch.compile, after the weights are loaded into the plain model."""
        t = self.cfg.train
        model = self.model
        if self.dist.distributed:
            if t.sync_bn:
                if self.device.type == "cuda":
                    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                else:
                    logger.warning("train.sync_bn needs CUDA: ignored on %s", self.device)
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
        if t.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        self.train_model = model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # BatchNorm statistics move in the forward pass, before the loss is known: a skipped step
        # restores them from this copy (taken after each good step), so NaN never reaches them.
        self._buffers = list(self.model.buffers())
        self._buffer_backup = [b.detach().clone() for b in self._buffers]

    def _load_resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        missing = [k for k in ("optimizer", "scheduler", "epoch", "step") if k not in ckpt]
        if missing:
            raise ValueError(f"{path} cannot be resumed: it lacks {missing} (a weights-only checkpoint?)")
        if list(ckpt["classes"]) != list(self.classes):
            raise ValueError(f"{path} was trained on classes {ckpt['classes']}, "
                             f"this run has {list(self.classes)}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self._load_scheduler(ckpt["scheduler"], path)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if "ema" in ckpt:
                self.ema.load_state_dict(ckpt["ema"], int(ckpt.get("ema_updates", 0)))
            else:
                logger.warning("%s has no EMA weights: the average restarts from the current weights", path)
                self.ema = ModelEMA(self.model, self.cfg.train.ema_decay)
        self.epoch = int(ckpt["epoch"])
        self.step = int(ckpt["step"])
        self.best_map07 = ckpt.get("best_map07")
        self.best_epoch = ckpt.get("best_epoch")
        self.nonfinite_total = int(ckpt.get("nonfinite_total", 0))
        saved_spe = int(ckpt.get("steps_per_epoch", self.steps_per_epoch))
        if saved_spe != self.steps_per_epoch:
            logger.warning("%s: %d steps per epoch then, %d now (data set or batch size changed): the "
                           "learning-rate curve changes from here", path, saved_spe, self.steps_per_epoch)
        logger.info("resumed %s: %d epoch(s) and %d step(s) done, best VOC07 mAP %s", path, self.epoch,
                    self.step, f"{self.best_map07:.4f}" if self.best_map07 is not None else "none yet")

    def _load_scheduler(self, state: dict[str, Any], path: Path) -> None:
        """Restore the step count; the curve itself always comes from the current config.

        Unchanged settings give exactly the saved curve. More epochs (``--epochs`` on resume) or
        another global batch (other GPU count) re-shape it from the current step on, with a warning.
        """
        schedule = self.scheduler.lr_lambdas[0]
        wanted_shape = dict(vars(schedule))
        wanted_base = list(self.scheduler.base_lrs)
        self.scheduler.load_state_dict(state)
        if vars(schedule) != wanted_shape or self.scheduler.base_lrs != wanted_base:
            logger.warning("%s: schedule %s with base lr %s, now %s with base lr %s: continuing on the new "
                           "curve from step %d", path, vars(schedule), self.scheduler.base_lrs, wanted_shape,
                           wanted_base, self.scheduler.last_epoch)
        vars(schedule).update(wanted_shape)
        self.scheduler.base_lrs = wanted_base
        factor = schedule(self.scheduler.last_epoch)
        for group, base in zip(self.optimizer.param_groups, wanted_base):
            group["initial_lr"] = base
            group["lr"] = base * factor
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Train the remaining epochs; returns the summary."""
        start = time.perf_counter()
        t = self.cfg.train
        try:
            if self.epoch >= t.epochs:
                logger.info("nothing to do: %d of %d epochs done", self.epoch, t.epochs)
            while self.epoch < t.epochs:
                epoch_stats = self.train_epoch(self.epoch)
                self.epoch += 1
                self._emit("epoch")
                if self.dist.is_main:
                    self.metrics.log("epoch", self.step, self.epoch, epoch_stats)
                    self.history.append({"epoch": float(self.epoch), **epoch_stats})
                improved = False
                if self._due_for_validation():
                    improved = self.validate()
                self._save(improved)
                barrier()
        finally:
            self.metrics.close()
        return TrainResult(self.run_dir, self.epoch, self.step, self.best_map07, self.best_epoch,
                           self.last_validation, self.nonfinite_total, time.perf_counter() - start,
                           list(self.history))

    def close(self) -> None:
        """Leave the process group (call once after :meth:`fit`, also after an error)."""
        self.metrics.close()
        cleanup_distributed()

    def _due_for_validation(self) -> bool:
        if self.val_set is None:
            return False
        every = max(1, self.cfg.train.val_every)
        return self.epoch % every == 0 or self.epoch >= self.cfg.train.epochs

    def _emit(self, event: str) -> None:
        if self.hook is not None:
            self.hook(event, self)

    def _seed_epoch(self, epoch: int) -> None:
        seed = self.cfg.train.seed * 1_000_003 + epoch
        sampler = self.train_loader.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        elif self.train_loader.generator is not None:
            self.train_loader.generator.manual_seed(seed)
        if self.cfg.data.workers == 0:
            self.train_set.reseed(seed)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training loader; returns the epoch's mean loss parts, lr and images/s."""
        self._seed_epoch(epoch)
        self.train_model.train()
        epoch_meter = _Meter()
        log_meter = _Meter()
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        for batch in bar:
            values = self.train_step(batch)
            images = len(batch["image_ids"]) * self.dist.world_size
            epoch_meter.add(values, images)
            log_meter.add(values, images)
            if self.step % self.log_every == 0 or log_meter.steps == self.steps_per_epoch:
                means = log_meter.means()
                speed = log_meter.images_per_second()
                if self.dist.is_main:
                    self.metrics.log("train", self.step, epoch + 1,
                                     {**means, "lr": values["lr"], "images_per_s": speed,
                                      "nonfinite_total": self.nonfinite_total})
                bar.set_postfix_str(" ".join(f"{k} {means[k]:.3f}" for k in ("loss", *LOSS_PARTS))
                                    + f" lr {values['lr']:.2e} {speed:.1f} img/s", refresh=False)
                log_meter = _Meter()
            self._emit("step")
        bar.close()
        stats = epoch_meter.means()
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        stats["images_per_s"] = epoch_meter.images_per_second()
        stats["seconds"] = time.perf_counter() - epoch_meter.start
        stats["nonfinite_total"] = float(self.nonfinite_total)
        if self.dist.is_main:
            logger.info("epoch %d/%d: loss %.4f (%s), lr %.3g, %.1f images/s, %.0f s", epoch + 1,
                        self.cfg.train.epochs, stats.get("loss", math.nan),
                        ", ".join(f"{k} {stats.get(k, math.nan):.3f}" for k in LOSS_PARTS), stats["lr"],
                        stats["images_per_s"], stats["seconds"])
        return stats

    def prepare_batch(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Loader batch -> ``(normalised images (B, 3, S, S), targets)`` on the device."""
        dev = self.device
        images = batch["images"].to(dev, non_blocking=True)
        polygons = [p.to(dev, non_blocking=True) for p in batch["polygons"]]
        classes = [c.to(dev, non_blocking=True) for c in batch["classes"]]
        difficult = [d.to(dev, non_blocking=True) for d in batch["difficult"]]
        x = normalize_images(images, self.cfg.data.mean, self.cfg.data.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = encode_targets(polygons, classes, difficult, len(self.classes), (x.shape[-2], x.shape[-1]),
                                 self.cfg.targets, self.cfg.model.down_ratio)
        return x, targets

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimiser step on a loader batch (or a counted skip): :meth:`prepare_batch` then
        :meth:`optimise`; returns the step's loss parts, grad norm and lr."""
        return self.optimise(*self.prepare_batch(batch))

    def optimise(self, x: Tensor, targets: dict[str, Tensor]) -> dict[str, float]:
        """Forward, loss, backward, clip, step (or a counted skip), EMA, schedule, on prepared tensors."""
        t = self.cfg.train
        with autocast_context(self.device, self.amp_dtype):
            outputs = self.train_model(x)
        total, parts = self.criterion(outputs, targets)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        max_norm = t.grad_clip if t.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        stats = torch.stack([total.detach(), *(parts[k].detach() for k in LOSS_PARTS),
                             grad_norm.detach().to(total.device)]).float()
        values = (all_reduce_sum(stats) / self.dist.world_size).tolist()
        loss, grad = values[0], values[-1]
        # fp16: the scaler skips steps with overflowing gradients by itself; only the loss is ours.
        finite = math.isfinite(loss) and (self.scaler is not None or math.isfinite(grad))
        lr = self.optimizer.param_groups[0]["lr"]
        if finite:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            if self._buffers:
                torch._foreach_copy_(self._buffer_backup, self._buffers)
            self.nonfinite_in_row = 0
        else:
            if self.scaler is not None:
                self.scaler.update()  # the unscale found inf/NaN: the scale backs off
            if self._buffers:
                with torch.no_grad():
                    torch._foreach_copy_(self._buffers, self._buffer_backup)
            self._count_nonfinite(dict(zip(("loss", *LOSS_PARTS), values[:-1])), grad)
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # A run whose first steps are all skipped has not called optimizer.step() yet: expected.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.scheduler.step()
        self.step += 1
        out = dict(zip(("loss", *LOSS_PARTS), values[:-1]))
        out["grad_norm"] = grad
        out["lr"] = lr
        out["skipped"] = 0.0 if finite else 1.0
        return out

    def _count_nonfinite(self, parts: dict[str, float], grad: float) -> None:
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        desc = ", ".join(f"{k} {v:.4g}" for k, v in parts.items()) + f", grad norm {grad:.4g}"
        if self.dist.is_main:
            logger.warning("non-finite loss or gradient at step %d (epoch %d): %s; step skipped "
                           "(%d in a row, %d in all)", self.step, self.epoch + 1, desc, self.nonfinite_in_row,
                           self.nonfinite_total)
        if self.nonfinite_in_row >= self.cfg.train.max_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_row} non-finite losses in a row (train.max_nonfinite = "
                f"{self.cfg.train.max_nonfinite}), last at step {self.step} of epoch {self.epoch + 1}: "
                f"{desc}. "
                f"Lower train.lr (now {self.optimizer.param_groups[0]['lr']:.3g}), check the labels, or try "
                "train.amp=none. The last good checkpoint is untouched.")

    # ------------------------------------------------------------------------- validation
    def validate(self) -> bool:
        """Validate on rank 0 (EMA weights when enabled); returns whether the best mAP improved."""
        improved = False
        if self.dist.is_main and self.val_loader is not None and self.val_set is not None:
            model = self.ema.module if self.ema is not None else unwrap_model(self.model)
            result = run_validation(model, self.val_loader, self.cfg, self.classes,
                                    self.val_set.ground_truth(), self.device, self.amp_dtype,
                                    self.channels_last, self.num_pictures, self.progress)
            self.last_validation = result
            if self.best_map07 is None or result.map07 > self.best_map07:
                self.best_map07, self.best_epoch, improved = result.map07, self.epoch, True
            self.metrics.log("val", self.step, self.epoch, result.scalars())
            self.metrics.log_text("val/ap_table", result.task1.format_table(), self.step)
            self._write_pictures(result)
            self.metrics.flush()
            logger.info("validation after epoch %d: VOC07 mAP %.4f, area mAP %.4f over %d images (%.1f s); "
                        "best %.4f (epoch %s)", self.epoch, result.map07, result.task1.map_area,
                        result.num_images, result.seconds, self.best_map07, self.best_epoch)
        self._emit("validation")
        return bool(improved)

    def _write_pictures(self, result: ValidationResult) -> None:
        assert self.val_set is not None
        index = {r.image_id: i for i, r in enumerate(self.val_set.records)}
        for image_id, dets in result.samples.items():
            i = index[image_id]
            try:
                image = read_image(self.val_set.records[i].path)
            except OSError as e:
                logger.warning("no prediction picture for %s: %s", image_id, e)
                continue
            truth = self.val_set.label_file(i)
            picture = prediction_picture(image, dets, self.classes, PICTURE_SCORE_THRESH, truth)
            save_picture(self.run_dir / "predictions" / f"{image_id}.png", picture)
            self.metrics.log_image(f"predictions/{image_id}", picture, self.step)

    # ------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything besides the model, config and classes that a resume needs."""
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "best_map07": self.best_map07,
            "best_epoch": self.best_epoch,
            "nonfinite_total": self.nonfinite_total,
            "world_size": self.dist.world_size,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
            state["ema_updates"] = self.ema.updates
        return state

    def _save(self, improved: bool) -> None:
        if self.dist.is_main:
            state = self.checkpoint_state()
            save_checkpoint(self.run_dir / "last.pt", self.model, self.cfg, self.classes, **state)
            if improved:
                save_checkpoint(self.run_dir / "best.pt", self.model, self.cfg, self.classes, **state)
                logger.info("best.pt: VOC07 mAP %.4f at epoch %d", self.best_map07, self.epoch)
        self._emit("checkpoint")
