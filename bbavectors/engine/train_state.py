"""What the loop keeps between epochs and runs: building the model (with one-line errors for bad
weight files), checkpoint state, saving (with one-line errors for a full disk), restoring a resumed
run (with its learning-rate curve), validation with prediction pictures, and the run summary.
"""

from __future__ import annotations

import logging
import pickle
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..checkpoint import CheckpointLoadError, CheckpointWriteError, save_checkpoint
from ..config import Config
from ..data.image_io import read_image
from ..models.builder import build_model
from ..runtime import unwrap_model
from .draw import prediction_picture, save_picture
from .ema import ModelEMA
from .optim import WarmupSchedule, build_scheduler, effective_lr, schedule_from_config
from .validate import ValidationResult, run_validation

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["TrainResult", "Meter", "CheckpointWriteError", "build_model_checked", "checkpoint_state",
           "save_epoch", "restore", "validate", "PICTURE_SCORE_THRESH"]

logger = logging.getLogger(__name__)

#: Detections drawn in prediction pictures score at least this (mAP uses every detection).
PICTURE_SCORE_THRESH = 0.3
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError,
                zipfile.BadZipFile)


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
    #: The time budget's plan and use (``RunBudget.summary_values``), None without a budget.
    budget: dict[str, Any] | None = None
    #: Share of the training split's label lines that were skipped.
    skipped_label_share: float = 0.0
    #: Training samples replaced by another because their image was unreadable (this process's run).
    replaced_samples: int = 0


@dataclass
class Meter:
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

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def images_per_second(self) -> float:
        return self.images / max(1e-9, self.seconds())


def _first_line(e: BaseException) -> str:
    if "weights_only" in str(e):  # torch's advice to load unsafely is never passed on
        return "it holds objects other than tensors and plain types (refused for safety)"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def build_model_checked(cfg: Config, num_classes: int, device: torch.device,
                        channels_last: bool) -> nn.Module:
    """:func:`build_model` on ``device``; a bad ``model.pretrained`` file becomes a CheckpointLoadError."""
    weights = cfg.model.pretrained
    try:
        model = build_model(cfg, num_classes=num_classes).to(device)
    except _LOAD_ERRORS as e:
        if weights in (None, "imagenet"):
            raise
        raise CheckpointLoadError(f"model.pretrained {weights}: not usable trunk weights for "
                                  f"{cfg.model.backbone}: {_first_line(e)}") from e
    return model.to(memory_format=torch.channels_last) if channels_last else model  # type: ignore[call-overload]


def checkpoint_state(tr: Trainer) -> dict[str, Any]:
    """Everything besides the model, config and classes that a resume needs."""
    state: dict[str, Any] = {
        "optimizer": tr.optimizer.state_dict(), "scheduler": tr.scheduler.state_dict(), "epoch": tr.epoch,
        "step": tr.step, "steps_per_epoch": tr.steps_per_epoch, "best_map07": tr.best_map07,
        "best_epoch": tr.best_epoch, "nonfinite_total": tr.nonfinite_total, "world_size": tr.dist.world_size,
        "labels_shifted": tr.labels_shifted, "whole_images": tr.whole_images,
    }
    if tr.scaler.is_enabled():
        state["scaler"] = tr.scaler.state_dict()
    if tr.ema is not None:
        state["ema"] = tr.ema.state_dict()
        state["ema_updates"] = tr.ema.updates
    budget = tr.budget.state()
    if budget is not None:
        state["budget"] = budget
    return state


def _save(tr: Trainer, name: str, state: dict[str, Any]) -> None:
    save_checkpoint(tr.run_dir / name, tr.model, tr.cfg, tr.classes, **state)


def save_epoch(tr: Trainer, improved: bool) -> None:
    """Rank 0 writes ``last.pt`` (and ``best.pt`` then ``last.pt`` again when ``improved``)."""
    if not tr.dist.is_main:
        return
    start = time.perf_counter()
    state = checkpoint_state(tr)
    if improved:
        _save(tr, "best.pt", state)
        logger.info("best.pt: VOC07 mAP %.4f at epoch %d", tr.best_map07, tr.epoch)
    _save(tr, "last.pt", state)
    tr.budget.saw_save(time.perf_counter() - start)


def _restore_schedule(tr: Trainer, ckpt: dict[str, Any], path: Path | None) -> WarmupSchedule:
    """The curve of a resumed run: the saved one for a budgeted run, else the current config's (warned
    when it differs: more epochs, another global batch)."""
    saved = dict(ckpt["scheduler"].get("lr_lambdas", [{}])[0] or {})
    if tr.budget.restore(ckpt.get("budget")):
        return WarmupSchedule(**saved)
    wanted = schedule_from_config(tr.cfg.train, tr.steps_per_epoch)
    base = effective_lr(tr.cfg.train, tr.global_batch)
    saved_base = list(ckpt["scheduler"].get("base_lrs", []))
    if saved != vars(wanted) or saved_base != [base] * len(tr.optimizer.param_groups):
        logger.warning("%s: schedule %s with base lr %s, now %s with base lr %s: continuing on the new "
                       "curve from step %d", path, saved, saved_base, vars(wanted), base, tr.step)
    return wanted


def restore(tr: Trainer, ckpt: dict[str, Any] | None, path: Path | None) -> LambdaLR:
    """The scheduler; with a resume checkpoint, first the weights, optimizer, scaler, EMA and counters.

    Raises:
        ValueError: other classes; CheckpointLoadError: weights that do not fit this model.
    """
    t = tr.cfg.train
    if ckpt is None:
        return build_scheduler(tr.optimizer, t, tr.steps_per_epoch)
    if list(ckpt["classes"]) != list(tr.classes):
        raise ValueError(f"{path} was trained on classes {ckpt['classes']}, this run has {list(tr.classes)}")
    try:
        tr.model.load_state_dict(ckpt["model"])
        tr.optimizer.load_state_dict(ckpt["optimizer"])
    except _LOAD_ERRORS as e:
        raise CheckpointLoadError(f"{path} does not fit a {tr.cfg.model.backbone} model with head width "
                                  f"{tr.cfg.model.head_width}: {_first_line(e)}") from e
    if tr.scaler.is_enabled() and ckpt.get("scaler"):
        tr.scaler.load_state_dict(ckpt["scaler"])
    if tr.ema is not None and "ema" in ckpt:
        tr.ema.load_state_dict(ckpt["ema"], int(ckpt.get("ema_updates", 0)))
    elif tr.ema is not None:
        logger.warning("%s has no EMA weights: the average restarts from the current weights", path)
        tr.ema = ModelEMA(tr.model, t.ema_decay)
    tr.epoch, tr.step = int(ckpt["epoch"]), int(ckpt["step"])
    tr.best_map07, tr.best_epoch = ckpt.get("best_map07"), ckpt.get("best_epoch")
    tr.guard.total = int(ckpt.get("nonfinite_total", 0))
    tr.labels_shifted = bool(ckpt.get("labels_shifted", False))
    if ckpt.get("whole_images", False) and not tr.whole_images:
        # The run had moved to whole canvases (train.whole_images_at): so does its continuation.
        tr.drop_windows()
    tr.guard.accept()  # the restored BatchNorm statistics are the restore point
    saved_spe = int(ckpt.get("steps_per_epoch", tr.steps_per_epoch))
    if saved_spe != tr.steps_per_epoch:
        logger.warning("%s: %d steps per epoch then, %d now (data set or batch size changed): the "
                       "learning-rate curve changes from here", path, saved_spe, tr.steps_per_epoch)
    schedule = _restore_schedule(tr, ckpt, path)
    # The curve is a function of the step: the scheduler starts at factor(step) from each group's base.
    for group in tr.optimizer.param_groups:
        group["initial_lr"] = effective_lr(t, tr.global_batch)
    logger.info("resumed %s: %d epoch(s) and %d step(s) done, best VOC07 mAP %s", path, tr.epoch, tr.step,
                f"{tr.best_map07:.4f}" if tr.best_map07 is not None else "none yet")
    return build_scheduler(tr.optimizer, t, tr.steps_per_epoch, schedule=schedule, start_step=tr.step)


def validate(tr: Trainer) -> bool:
    """Validate on rank 0 (EMA weights when enabled), log, draw pictures; whether the best mAP improved."""
    if not (tr.dist.is_main and tr.val_loader is not None and tr.val_set is not None):
        return False
    start = time.perf_counter()
    model = tr.ema.module if tr.ema is not None else unwrap_model(tr.model)
    result = run_validation(model, tr.val_loader, tr.cfg, tr.classes, tr.val_set.ground_truth(), tr.device,
                            tr.amp_dtype, tr.channels_last, tr.num_pictures, tr.progress)
    tr.last_validation = result
    improved = tr.best_map07 is None or result.map07 > tr.best_map07
    if improved:
        tr.best_map07, tr.best_epoch = result.map07, tr.epoch
    tr.metrics.log("val", tr.step, tr.epoch, result.scalars())
    tr.metrics.log_text("val/ap_table", result.task1.format_table(), tr.step)
    _write_pictures(tr, result)
    tr.metrics.flush()
    logger.info("validation after epoch %d: VOC07 mAP %.4f, area mAP %.4f over %d images (%.1f s); "
                "best %.4f (epoch %s)", tr.epoch, result.map07, result.task1.map_area, result.num_images,
                result.seconds, tr.best_map07, tr.best_epoch)
    tr.budget.saw_validation(time.perf_counter() - start)
    return improved


def _write_pictures(tr: Trainer, result: ValidationResult) -> None:
    assert tr.val_set is not None
    index = {r.image_id: i for i, r in enumerate(tr.val_set.records)}
    for image_id, dets in result.samples.items():
        i = index[image_id]
        try:
            image = read_image(tr.val_set.records[i].path)
        except OSError as e:
            logger.warning("no prediction picture for %s: %s", image_id, e)
            continue
        picture = prediction_picture(image, dets, tr.classes, PICTURE_SCORE_THRESH, tr.val_set.label_file(i))
        save_picture(tr.run_dir / "predictions" / f"{image_id}.png", picture)
        tr.metrics.log_image(f"predictions/{image_id}", picture, tr.step)
