r"""The training loop: data -> device -> targets -> model -> loss -> optimiser, with validation,
checkpoints, metrics, mixed precision, multi-GPU (DDP under ``torchrun``) and a time budget.

One step (:meth:`Trainer.train_step`)
-------------------------------------
Loader workers only decode and augment: a batch is uint8 images ``(B, 3, S, S)`` and per-image
polygon / class / difficult tensors. On the device: ``non_blocking`` copies,
:func:`~bbavectors.data.letterbox.normalize_images`, channels_last,
:func:`bbavectors.targets.encode_targets`, the model under autocast (bf16, or fp16 with an enabled
``GradScaler``), :class:`bbavectors.losses.BBAVLoss` (float32), backward, gradient clipping
(``train.grad_clip``, the norm is always measured), optimiser step, EMA update, then the per-step
learning-rate schedule (:mod:`bbavectors.engine.optim`). Steps with a non-finite loss or gradient are
skipped and counted (:mod:`bbavectors.engine.nonfinite`).

Epochs, validation, checkpoints
-------------------------------
Each epoch's order is a function of ``(train.seed, epoch)``, so a resumed run sees the same order as
an uninterrupted one. After every epoch rank 0 writes ``last.pt`` (model, optimizer, scheduler,
scaler, epoch, step, best mAP, EMA, budget, config, class names) *before* validating; validation runs
every ``train.val_every`` epochs and after the last, on rank 0, with the EMA weights when
``train.ema``; when the VOC07 mAP improved, ``best.pt`` is written (and ``last.pt`` again, with the
new best). After the last epoch, before its save, the labels' centre offset is measured on training
images and stored in ``decode.centre_shift`` (``train.calibrate_centres``,
:mod:`bbavectors.engine.calibrate`). ``resume`` continues from a ``last.pt``: same run folder, step count
and learning-rate curve.
``train.time_budget`` sets the run's length from measured speed (:mod:`bbavectors.engine.budget`).

Run folder ``runs/<name>/`` (created once every start-up check passed): ``config.yaml``, ``last.pt``,
``best.pt``, ``metrics.jsonl``, ``tb/`` (TensorBoard), ``predictions/<image_id>.png``.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..config import Config, save_config
from ..data.dataset import DotaDataset
from ..data.letterbox import normalize_images
from ..data.loader import build_dataloader
from ..losses import BBAVLoss
from ..runtime import AMP_MODES, autocast_context, configure_cpu_threads, resolve_amp, resolve_device
from ..targets import encode_targets
from .budget_run import RunBudget
from .calibrate import calibrate_run, shift_training_labels
from .data_checks import check_images_readable, check_objects
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    read_dist_env,
)
from .ema import ModelEMA
from .metrics_log import MetricsLogger
from .nonfinite import NonFiniteGuard, NonFiniteLossError
from .optim import build_optimizer, effective_lr
from .run_setup import (
    QUICK_CONFIG,
    PreparedRun,
    RunSetupError,
    build_train_config,
    create_run_dir,
    default_run_name,
    load_resume_checkpoint,
    prepare_run,
    resolve_classes,
    resolve_data_root,
    resolve_split,
)
from .train_state import (
    CheckpointWriteError,
    Meter,
    TrainResult,
    build_model_checked,
    checkpoint_state,
    restore,
    save_epoch,
)
from .train_state import validate as run_epoch_validation

__all__ = ["AMP_MODES", "LOSS_PARTS", "NonFiniteLossError", "TrainResult", "Trainer", "resolve_amp",
           "configure_cpu_threads", "build_train_config", "PreparedRun", "prepare_run", "default_run_name",
           "create_run_dir", "resolve_data_root", "resolve_classes", "QUICK_CONFIG", "RunSetupError",
           "CheckpointWriteError"]

logger = logging.getLogger(__name__)

#: Mid-run label-shift passes tried at most (each one that finds too few pairs is retried the next epoch).
LABEL_SHIFT_TRIES = 3

LOSS_PARTS: tuple[str, ...] = ("hm", "wh", "reg", "cls_theta", "probiou", "angle")
#: Events passed to the ``hook`` callable.
HOOK_EVENTS: tuple[str, ...] = ("step", "epoch", "validation", "checkpoint")

Hook = Callable[[str, "Trainer"], None]


class Trainer:
    """Train CTRBOX from a :class:`Config` (module docstring).

    Args:
        cfg: the resolved config (when resuming: the checkpoint's, possibly with overrides).
        run_dir: the run folder (created here once the start-up checks passed; a resumed run's folder).
        resume: a ``last.pt`` (or ``best.pt``) to continue from; resume_state: that file, loaded already.
        dist_info, device: this process's place in a torchrun job and its device (given by
            :func:`prepare_run`, which joined the process group; None: resolved and joined here).
        progress: tqdm bars on rank 0.
        hook: ``hook(event, trainer)`` after each event of :data:`HOOK_EVENTS` (tests use it to
            interrupt a run, or to watch it).
        log_every: steps between ``train`` records in metrics.jsonl / TensorBoard.
        num_pictures: validation images drawn into ``predictions/`` and TensorBoard.
        threads: torch CPU threads (default :func:`configure_cpu_threads`).
        validation: False skips validation even when a validation split exists (benchmarks).
        budget_start: ``time.time()`` when the command started (the time budget's clock; default now).
    """

    def __init__(self, cfg: Config, run_dir: str | Path, resume: str | Path | None = None,
                 dist_info: DistInfo | None = None, progress: bool = True, hook: Hook | None = None,
                 log_every: int = 10, num_pictures: int = 4, threads: int | None = None,
                 validation: bool = True, device: torch.device | None = None,
                 resume_state: dict[str, Any] | None = None, budget_start: float | None = None) -> None:
        self.cfg, self.validation, self.run_dir = cfg, validation, Path(run_dir)
        self.dist = dist_info if dist_info is not None else read_dist_env()
        self.progress, self.hook = progress and self.dist.is_main, hook
        self.log_every, self.num_pictures = max(1, log_every), num_pictures
        t = cfg.train
        if device is None:  # used as a library: resolve the device and join the group here, once
            device = resolve_device(t.device, self.dist.local_rank)
            init_distributed(self.dist, device)
        self.device = device
        self.threads = configure_cpu_threads(self.device, threads)
        self.amp_dtype, use_scaler = resolve_amp(t.amp, self.device)
        # channels_last also pays on CPU (oneDNN convolutions): 15% faster per step, fp32 and bf16.
        self.channels_last = t.channels_last
        torch.manual_seed(t.seed)  # the same initial weights on every rank (the EMA copy needs it)
        self.epoch = self.step = 0  # epochs completed; optimiser steps attempted (skipped included)
        self.best_map07: float | None = None
        self.best_epoch: int | None = None
        self.last_validation: Any = None
        self.history: list[dict[str, float]] = []
        #: Training samples that stood in for an unreadable image (summed over loader workers).
        self.replaced_samples = 0
        #: ``train.label_shift_at``: whether the mid-run pass moved the labels (kept in checkpoints),
        #: and the passes tried in this process (each costs a calibration's time).
        self.labels_shifted = False
        self.label_shift_tries = 0
        #: ``train.whole_images_at``: whether training moved from windows to whole canvases (kept in
        #: checkpoints).
        self.whole_images = False
        self.data_root = resolve_data_root(cfg)
        self.classes = resolve_classes(cfg.data.classes, self.data_root)
        self.skipped_label_share = self._build_data()
        self.model: nn.Module = build_model_checked(cfg, len(self.classes), self.device, self.channels_last)
        self.global_batch = t.batch_size * self.dist.world_size
        self.optimizer = build_optimizer(self.model, t, self.global_batch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.ema = ModelEMA(self.model, t.ema_decay) if t.ema else None
        self.criterion = BBAVLoss(cfg.loss)
        self.guard = NonFiniteGuard(list(self.model.buffers()), t.max_nonfinite, log=self.dist.is_main)
        self.budget = RunBudget(t.time_budget, budget_start, self.steps_per_epoch, t.val_every,
                                t.calibration_images if t.calibrate_centres else 0,
                                label_shift_pass=t.label_shift_at > 0)
        state = resume_state if resume_state is not None else (
            load_resume_checkpoint(resume) if resume is not None else None)
        self.scheduler = restore(self, state, Path(resume) if resume is not None else None)
        self._wrap_model()
        self._start_run_folder(resumed=state is not None)

    # ------------------------------------------------------------------------------ set-up
    @property
    def nonfinite_total(self) -> int:
        return self.guard.total

    @property
    def nonfinite_in_row(self) -> int:
        return self.guard.in_row

    def _build_data(self) -> float:
        """The datasets and loaders, checked (data_checks); returns the train split's skipped share."""
        cfg, d = self.cfg, self.cfg.data
        train_split = resolve_split(d.train_split, self.data_root)
        self.train_set = DotaDataset(self.data_root, train_split, self.classes, d.input_size,
                                     augment=cfg.augment, strict_labels=d.strict_labels)
        share = check_objects(self.train_set, "training")
        world_batch = cfg.train.batch_size * self.dist.world_size
        self.rebuild_train_loader()
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise RunSetupError(f"no training batches: {len(self.train_set)} images for a global batch of "
                                f"{world_batch}")
        self.val_set: DotaDataset | None = None
        self.val_loader: DataLoader[Any] | None = None
        split_file = resolve_split(d.val_split, self.data_root)
        if not self.validation:
            return share
        if not split_file.is_file():
            logger.warning("no validation split (%s): no validation, no mAP and no best.pt", split_file)
            return share
        self.val_set = DotaDataset(self.data_root, split_file, self.classes, d.input_size, augment=None,
                                   strict_labels=d.strict_labels)
        check_objects(self.val_set, "validation")
        if self.dist.is_main:
            check_images_readable(self.val_set, "validation")
            self.val_loader = build_dataloader(self.val_set, cfg.train.batch_size, shuffle=False,
                                               workers=min(d.workers, 2), seed=cfg.train.seed)
        return share

    def rebuild_train_loader(self) -> None:
        """(Re)build the training loader: its persistent workers hold a copy of the data set, so a change
        of the augmentation settings (``train.label_shift_at``) reaches them only through new workers."""
        world_batch = self.cfg.train.batch_size * self.dist.world_size
        # Dropping the ragged last batch keeps BatchNorm statistics sane, unless it is all there is.
        self.train_loader: DataLoader[Any] = build_dataloader(
            self.train_set, self.cfg.train.batch_size, shuffle=True, workers=self.cfg.data.workers,
            distributed=self.dist.distributed, drop_last=len(self.train_set) >= world_batch,
            seed=self.cfg.train.seed)

    def _wrap_model(self) -> None:
        """SyncBatchNorm, DDP and torch.compile, after the weights are loaded into the plain model."""
        t, model = self.cfg.train, self.model
        if self.dist.distributed:
            if t.sync_bn and self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif t.sync_bn:
                logger.warning("train.sync_bn needs CUDA: ignored on %s", self.device)
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
        self.train_model: nn.Module = torch.compile(model) if t.compile else model  # type: ignore[assignment]
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def _start_run_folder(self, resumed: bool) -> None:
        """Create the run folder (every check passed), write config.yaml, open the metrics log."""
        if self.dist.is_main:
            # plan_run_dir chose a free name (an existing empty folder, e.g. a test's, is fine too).
            if not resumed and (self.run_dir / "last.pt").exists():
                raise FileExistsError(f"{self.run_dir} holds a run already: continue it with --resume")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
        self.metrics = MetricsLogger(self.run_dir, enabled=self.dist.is_main,
                                     resume_step=self.step if resumed else None)
        if self.dist.is_main:
            t = self.cfg.train
            logger.info("training %s on %s: %d classes, %d train / %s val images, %d steps per epoch, global "
                        "batch %d, lr %.3g (= %.3g x %d / %d), amp %s, %d CPU thread(s), world size %d",
                        self.cfg.model.backbone, self.device, len(self.classes), len(self.train_set),
                        len(self.val_set) if self.val_set is not None else "no", self.steps_per_epoch,
                        self.global_batch, effective_lr(t, self.global_batch), t.lr, self.global_batch,
                        t.base_batch_size, self.amp_dtype or "float32", self.threads, self.dist.world_size)

    # ------------------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Train the remaining epochs (validating, saving); returns the summary."""
        start = time.perf_counter()
        try:
            if self.epoch >= self.budget.epochs_or(self.cfg.train.epochs):
                logger.info("nothing to do: %d epochs done", self.epoch)
            while self.epoch < self.budget.epochs_or(self.cfg.train.epochs):
                stats = self.train_epoch(self.epoch)
                self.budget.mark_epoch_end(self.step)
                self.epoch += 1
                self._emit("epoch")
                self.metrics.log("epoch", self.step, self.epoch, stats)
                if self.dist.is_main:
                    self.history.append({"epoch": float(self.epoch), **stats})
                if self._finished_training():
                    calibrate_run(self)
                elif self._due_for_label_shift():
                    self.label_shift_tries += 1
                    shift_training_labels(self)
                # Rank 0's clock decides, so that every process switches at the same epoch.
                if not self._finished_training() and broadcast_object(self._due_for_whole_images()):
                    self.use_whole_images()
                save_epoch(self, improved=False)  # before validating: a failing validation loses nothing
                if self._due_for_validation() and self.validate():
                    save_epoch(self, improved=True)
                self._emit("checkpoint")
                self.budget.after_epoch(self)
                barrier()
            self.budget.finish(self)
        finally:
            self.metrics.close()
        return TrainResult(self.run_dir, self.epoch, self.step, self.best_map07, self.best_epoch,
                           self.last_validation, self.nonfinite_total, time.perf_counter() - start,
                           list(self.history), self.budget.summary(), self.skipped_label_share,
                           self.replaced_samples)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training loader (or up to the planned last step); the epoch's mean loss
        parts, lr, images/s and seconds."""
        self._seed_epoch(epoch)
        self.train_model.train()
        epoch_meter, log_meter = Meter(), Meter()
        last_step = self.budget.steps_or(self.cfg.train.epochs * self.steps_per_epoch)
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}", disable=not self.progress, leave=False,
                   dynamic_ncols=True)
        for batch in bar:
            values = self.train_step(batch)
            self.replaced_samples += int(batch.get("num_replaced", 0))
            images = len(batch["image_ids"]) * self.dist.world_size
            epoch_meter.add(values, images)
            log_meter.add(values, images)
            if self.step % self.log_every == 0 or log_meter.steps == self.steps_per_epoch:
                means, speed = log_meter.means(), log_meter.images_per_second()
                self.metrics.log("train", self.step, epoch + 1, {**means, "lr": values["lr"],
                                 "images_per_s": speed, "nonfinite_total": self.nonfinite_total})
                bar.set_postfix_str(f"loss {means['loss']:.3f} lr {values['lr']:.2e} {speed:.1f} img/s",
                                    refresh=False)
                log_meter = Meter()
            self._emit("step")
            last_step = self.budget.after_step(self, epoch_meter.steps, last_step)
            if self.step >= last_step:
                break
        bar.close()
        stats = {**epoch_meter.means(), "lr": self.optimizer.param_groups[0]["lr"],
                 "images_per_s": epoch_meter.images_per_second(), "seconds": epoch_meter.seconds(),
                 "nonfinite_total": float(self.nonfinite_total),
                 "replaced_samples": float(self.replaced_samples)}
        if self.dist.is_main:
            logger.info("epoch %d: loss %.4f (%s), lr %.3g, %.1f images/s, %.0f s", epoch + 1,
                        stats.get("loss", math.nan), ", ".join(f"{k} {stats.get(k, math.nan):.3f}"
                                                              for k in LOSS_PARTS),
                        stats["lr"], stats["images_per_s"], stats["seconds"])
        return stats

    def prepare_batch(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Loader batch -> ``(normalised images (B, 3, S, S), targets)`` on the device."""
        dev = self.device
        images = batch["images"].to(dev, non_blocking=True)
        polygons, classes, difficult = ([t.to(dev, non_blocking=True) for t in batch[k]]
                                        for k in ("polygons", "classes", "difficult"))
        x = normalize_images(images, self.cfg.data.mean, self.cfg.data.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = encode_targets(polygons, classes, difficult, len(self.classes), (x.shape[-2], x.shape[-1]),
                                 self.cfg.targets, self.cfg.model.down_ratio, self.cfg.model.grid_offset)
        return x, targets

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimiser step on a loader batch (or a counted skip); the step's loss parts, grad norm, lr."""
        return self.optimise(*self.prepare_batch(batch))

    def optimise(self, x: Tensor, targets: dict[str, Tensor]) -> dict[str, float]:
        """Forward, loss, backward, clip, step (or a counted skip), EMA, schedule, on prepared tensors."""
        with autocast_context(self.device, self.amp_dtype):
            outputs = self.train_model(x)
        total, parts = self.criterion(outputs, targets)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.train.grad_clip if self.cfg.train.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        stats = torch.stack([total.detach(), *(parts[k].detach() for k in LOSS_PARTS),
                             grad_norm.detach().to(total.device)]).float()
        reduced = (all_reduce_sum(stats) / self.dist.world_size).tolist()
        values = dict(zip(("loss", *LOSS_PARTS, "grad_norm"), reduced))
        lr = self.optimizer.param_groups[0]["lr"]
        # fp16: the scaler skips steps with overflowing gradients by itself; only the loss is ours.
        finite = self.guard.is_finite(values["loss"], values["grad_norm"],
                                      check_grad=not self.scaler.is_enabled())
        if finite:
            self.scaler.step(self.optimizer)
            if self.ema is not None:
                self.ema.update(self.model)
            self.guard.accept()
        self.scaler.update()  # after a skip with fp16: the unscale found inf/NaN, the scale backs off
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # A run whose first steps are all skipped has not called optimizer.step() yet: expected.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.scheduler.step()
        self.step += 1
        if not finite:
            self.guard.reject(values, f"step {self.step - 1} (epoch {self.epoch + 1})",
                              f"Lower train.lr (now {lr:.3g}), check the labels, or try train.amp=none. ")
        return {**values, "lr": lr, "skipped": 0.0 if finite else 1.0}

    # --------------------------------------------------------------------------- helpers
    def validate(self) -> bool:
        """Validate on rank 0 (EMA weights when enabled); returns whether the best mAP improved."""
        improved = run_epoch_validation(self)
        self._emit("validation")
        return improved

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything besides the model, config and classes that a resume needs."""
        return checkpoint_state(self)

    def close(self) -> None:
        """Close the metrics files, leave the process group (after :meth:`fit`, also after an error)."""
        self.metrics.close()
        cleanup_distributed()

    def _finished_training(self) -> bool:
        return self.epoch >= self.budget.epochs_or(self.cfg.train.epochs)

    def _due_for_label_shift(self) -> bool:
        at = self.cfg.train.label_shift_at
        if at <= 0 or self.labels_shifted or self.label_shift_tries >= LABEL_SHIFT_TRIES:
            return False
        planned = self.budget.steps_or(self.cfg.train.epochs * self.steps_per_epoch)
        return self.step >= at * planned

    def _due_for_whole_images(self) -> bool:
        at = self.cfg.train.whole_images_at
        if at <= 0 or self.whole_images:
            return False
        if self.budget.active and self.budget.minutes is not None:
            return self.budget.elapsed() >= at * self.budget.minutes * 60.0
        return self.epoch >= at * self.budget.epochs_or(self.cfg.train.epochs)

    def use_whole_images(self) -> None:
        """From the next epoch on, train on whole canvases (``train.whole_images_at``): the windows'
        size is dropped from the augmentation settings and the loader's workers are rebuilt; the time
        budget re-measures the (slower) steps from here."""
        crop = self.cfg.augment.crop_size
        self.drop_windows()
        self.budget.steps_changed()
        if self.dist.is_main:
            logger.info("train.whole_images_at: whole %d px canvases instead of %s px windows from step %d "
                        "(epoch %d)", self.cfg.data.input_size, crop, self.step, self.epoch)
            self.metrics.log("whole_images", self.step, self.epoch, {"crop_size_before": float(crop or 0)})
            save_config(self.cfg, self.run_dir / "config.yaml")

    def drop_windows(self) -> None:
        """Train on whole canvases from now on (``augment.crop_size`` dropped, loader workers rebuilt);
        :meth:`use_whole_images` mid-run, the checkpoint restore on ``--resume``."""
        self.cfg.augment.crop_size = None
        self.whole_images = True
        self.rebuild_train_loader()

    def _due_for_validation(self) -> bool:
        every = max(1, self.cfg.train.val_every)
        return self.val_set is not None and (self.epoch % every == 0 or self._finished_training())

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
