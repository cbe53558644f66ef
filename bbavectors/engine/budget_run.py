"""The time budget inside a run: probe the step time, plan, re-plan when it drifts, log, save, restore.

The rules are in :mod:`bbavectors.engine.budget` (the planning itself is a pure function there).
Under torchrun every decision (plan now? re-plan?) and every measured cost is rank 0's, broadcast, so
all ranks train the same number of steps on the same curve.
"""

from __future__ import annotations

import io
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import torch

from ..runtime import autocast_context, unwrap_model
from .budget import (
    PROBE_MAX_SHARE,
    PROBE_SKIP,
    PROBE_STEPS,
    REPLAN_TOLERANCE,
    VAL_OVERHEAD,
    BudgetPlan,
    plan_time_budget,
)
from .distributed import broadcast_object

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["RunBudget"]

logger = logging.getLogger(__name__)

#: Whole epochs are pooled until they hold this many steps before a drift check (tiny epochs are noisy).
DRIFT_MIN_STEPS = 20


def _off(measured: float, estimate: float, tolerance: float = REPLAN_TOLERANCE, floor_s: float = 0.5) -> bool:
    """``measured`` differs from ``estimate`` by more than ``tolerance`` (and by more than ``floor_s``)."""
    return abs(measured - estimate) > max(tolerance * estimate, floor_s)


class RunBudget:
    """``train.time_budget`` for one run (inactive when ``minutes`` is None).

    Args:
        minutes: the budget; budget_start: ``time.time()`` when the command started (default now).
        steps_per_epoch, val_every: the run's shape.
        calibration_images: training images the end-of-run centre calibration predicts (0: none).
        label_shift_pass: the run also calibrates once mid-run (``train.label_shift_at``): its time is
            reserved too until :meth:`saw_label_shift`.
    """

    def __init__(self, minutes: float | None, budget_start: float | None, steps_per_epoch: int,
                 val_every: int, calibration_images: int = 0, label_shift_pass: bool = False) -> None:
        self.minutes = minutes
        self.clock0 = budget_start if budget_start is not None else time.time()
        self.steps_per_epoch, self.val_every = steps_per_epoch, val_every
        self.calibration_images = calibration_images
        self.label_shift_pending = label_shift_pass
        self.plan: BudgetPlan | None = None
        self.sec_per_step = self.val_seconds = self.save_seconds = self.calibration_seconds = 0.0
        self.measured_val: float | None = None
        self.measured_save: float | None = None
        self.step_checked = self.val_checked = False
        #: Drift re-plans allowed (off after a resume: the saved plan is kept).
        self.follow_drift = True
        #: Training-loop seconds and steps of the whole epochs since the last drift check.
        self._window_s, self._window_steps = 0.0, 0
        self.plans = 0
        self._seen = 0
        self._created = time.perf_counter()
        self._marks: dict[str, tuple[float, int]] = {}

    @property
    def active(self) -> bool:
        return self.minutes is not None

    def epochs_or(self, default: int) -> int:
        return self.plan.epochs if self.plan is not None else default

    def steps_or(self, default: int) -> int:
        return self.plan.total_steps if self.plan is not None else default

    def elapsed(self) -> float:
        return time.time() - self.clock0

    # -------------------------------------------------------------------------------- probing
    def after_step(self, tr: Trainer, steps_in_epoch: int, last_step: int) -> int:
        """Time the first steps; plan after :data:`PROBE_STEPS` (or the first epoch); the last step."""
        if not self.active or self.plan is not None:
            return last_step
        self._seen += 1
        now = time.perf_counter()
        if self._seen in (1, PROBE_SKIP):
            self._marks["start" if self._seen == PROBE_SKIP else "first"] = (now, self._seen)
        assert self.minutes is not None
        probe_long = self._seen > PROBE_SKIP and now - self._created > PROBE_MAX_SHARE * 60 * self.minutes
        probing = self._seen < PROBE_STEPS and steps_in_epoch < self.steps_per_epoch and not probe_long
        if broadcast_object(probing):
            return last_step
        t0, n0 = self._marks.get("start", self._marks["first"])
        if self._seen > n0:
            self.sec_per_step = (now - t0) / (self._seen - n0)
        else:  # a one-step epoch: that step's time, start-up included (over-estimates: safe)
            self.sec_per_step = now - self._created
        self.val_seconds, self.calibration_seconds = self._estimate_predictions(tr)
        self.save_seconds = self._estimate_save(tr)
        self._marks["planned"] = (time.perf_counter(), tr.step)
        self._apply(tr, "first estimate")
        return self.steps_or(last_step)

    def _estimate_predictions(self, tr: Trainer) -> tuple[float, float]:
        """Seconds of one validation pass and of the end-of-run calibration (0 for what the run has not)."""
        val_images = len(tr.val_set) if tr.val_set is not None else 0
        calib_images = min(self.calibration_images, len(tr.train_set))
        if val_images == 0 and calib_images == 0:
            return 0.0, 0.0
        model = tr.ema.module if tr.ema is not None else unwrap_model(tr.model)
        s = tr.cfg.data.input_size
        x = torch.zeros(tr.cfg.train.batch_size, 3, s, s, device=tr.device)
        was_training = model.training
        model.eval()
        with torch.no_grad(), autocast_context(tr.device, tr.amp_dtype):
            start = time.perf_counter()
            model(x)
            forward = time.perf_counter() - start
        model.train(was_training)
        batch = tr.cfg.train.batch_size
        return (math.ceil(val_images / batch) * forward * VAL_OVERHEAD,
                math.ceil(calib_images / batch) * forward * VAL_OVERHEAD)

    @staticmethod
    def _estimate_save(tr: Trainer) -> float:
        start = time.perf_counter()
        torch.save({"model": unwrap_model(tr.model).state_dict(), "optimizer": tr.optimizer.state_dict()},
                   io.BytesIO())
        return (time.perf_counter() - start) * (2 if tr.ema is not None else 1)

    # ----------------------------------------------------------------------------- re-planning
    def saw_save(self, seconds: float) -> None:
        if self.measured_save is None:
            self.measured_save = seconds

    def saw_calibration(self, seconds: float) -> None:
        """The calibration ran (the run's end: nothing is planned after it; kept for the summary)."""
        self.calibration_seconds = seconds

    def saw_label_shift(self, seconds: float) -> None:
        """The mid-run calibration succeeded: its reserve is released (its time is in the clock already).
        A resumed run keeps its saved plan and never re-plans, so it needs no call."""
        self.label_shift_pending = False
        if seconds > 0:
            self.calibration_seconds = seconds

    def saw_validation(self, seconds: float) -> None:
        if self.measured_val is None:
            self.measured_val = seconds

    def after_epoch(self, tr: Trainer) -> None:
        """The re-plans (module docstring of :mod:`~bbavectors.engine.budget`): once after the first
        epoch (step time, save time) and after the first validation (its time); then whenever the step
        time of the whole epochs since the last plan drifted from the plan's; each only when off by
        more than :data:`REPLAN_TOLERANCE`."""
        if not self.active or self.plan is None or tr.epoch >= self.plan.epochs:
            return
        reasons = []
        if not self.step_checked and "planned" in self._marks:
            self.step_checked = True
            t0, s0 = self._marks["planned"]
            t1, s1 = self._marks.get("epoch_end", (t0, s0))
            if s1 - s0 >= 3 and _off((t1 - t0) / (s1 - s0), self.sec_per_step, floor_s=0.0):
                reasons.append(f"step time {self.sec_per_step:.3f} -> {(t1 - t0) / (s1 - s0):.3f} s")
                self.sec_per_step = (t1 - t0) / (s1 - s0)
            if self.measured_save is not None and _off(self.measured_save, self.save_seconds):
                reasons.append(f"save {self.save_seconds:.2f} -> {self.measured_save:.2f} s")
                self.save_seconds = self.measured_save
        elif self.follow_drift and self._window_steps >= DRIFT_MIN_STEPS:
            recent = self._window_s / self._window_steps
            if _off(recent, self.sec_per_step, floor_s=0.0):
                reasons.append(f"step time drifted {self.sec_per_step:.3f} -> {recent:.3f} s "
                               f"over {self._window_steps} steps")
                self.sec_per_step = recent
            self._window_s, self._window_steps = 0.0, 0
        if not self.val_checked and self.measured_val is not None:
            self.val_checked = True
            if _off(self.measured_val, self.val_seconds):
                reasons.append(f"validation {self.val_seconds:.1f} -> {self.measured_val:.1f} s")
                self.val_seconds = self.measured_val
        reasons = broadcast_object(reasons)
        if reasons:
            self._apply(tr, "re-estimate (" + ", ".join(reasons) + ")")
        self._marks["epoch_start"] = (time.perf_counter(), tr.step)

    def steps_changed(self) -> None:
        """The step time is about to change for good (``train.whole_images_at``): the drift check
        measures only the steps from here on, and re-plans after the next whole epoch(s)."""
        self._window_s, self._window_steps = 0.0, 0
        self._marks.pop("epoch_start", None)
        self.follow_drift = True

    def mark_epoch_end(self, step: int) -> None:
        """Called when an epoch's training loop ends (before its save and validation)."""
        if not self.active:
            return
        now = time.perf_counter()
        if "epoch_end" not in self._marks:
            self._marks["epoch_end"] = (now, step)
        if "epoch_start" in self._marks:  # whole epochs only: the first one warms the loader up
            t0, s0 = self._marks["epoch_start"]
            self._window_s += now - t0
            self._window_steps += step - s0

    def _apply(self, tr: Trainer, why: str) -> None:
        assert self.minutes is not None
        budget_s = self.minutes * 60.0
        self.sec_per_step, self.val_seconds, self.save_seconds, self.calibration_seconds = broadcast_object(
            (self.sec_per_step, self.val_seconds, self.save_seconds, self.calibration_seconds))
        self.clock0 = broadcast_object(self.clock0)
        passes = 2 if self.label_shift_pending else 1
        self.plan = plan_time_budget(budget_s, self.sec_per_step, self.steps_per_epoch, self.val_seconds,
                                     self.val_every, self.save_seconds, self.elapsed(), tr.step,
                                     final_seconds=self.calibration_seconds * passes)
        self.plans += 1
        self._window_s, self._window_steps = 0.0, 0
        tr.scheduler.lr_lambdas[0].reshape(tr.step, self.plan.total_steps)  # type: ignore[attr-defined]
        if tr.dist.is_main:
            logger.info("time budget %.1f min, %s: %.3f s/step, validation ~%.1f s, save ~%.2f s, "
                        "calibration ~%.1f s, %.0f s used -> %d steps (%d epoch(s)), predicted end at %.0f s",
                        self.minutes, why, self.sec_per_step, self.val_seconds, self.save_seconds,
                        self.calibration_seconds, self.elapsed(),
                        self.plan.total_steps, self.plan.epochs, self.plan.predicted_seconds)
        tr.metrics.log("budget", tr.step, tr.epoch, {**self.summary_values(), "reason": why})

    # --------------------------------------------------------------------------- state, summary
    def summary_values(self) -> dict[str, Any]:
        plan = self.plan
        return {"budget_s": (self.minutes or 0.0) * 60.0, "sec_per_step": self.sec_per_step,
                "val_seconds": self.val_seconds, "save_seconds": self.save_seconds,
                "calibration_seconds": self.calibration_seconds,
                "total_steps": plan.total_steps if plan else None, "epochs": plan.epochs if plan else None,
                "predicted_s": plan.predicted_seconds if plan else None, "used_s": self.elapsed(),
                "plans": self.plans}

    def summary(self) -> dict[str, Any] | None:
        return self.summary_values() if self.active else None

    def finish(self, tr: Trainer) -> None:
        if not self.active:
            return
        values = self.summary_values()
        tr.metrics.log("budget", tr.step, tr.epoch, {**values, "reason": "finished"})
        if tr.dist.is_main:
            logger.info("time budget %.0f s: %.0f s used (predicted %s s), %d steps", values["budget_s"],
                        values["used_s"], f"{values['predicted_s']:.0f}" if values["predicted_s"] else "?",
                        tr.step)

    def state(self) -> dict[str, Any] | None:
        """What a checkpoint keeps: the chosen length and the measured costs."""
        if not self.active or self.plan is None:
            return None
        return {"minutes": self.minutes, "total_steps": self.plan.total_steps, "epochs": self.plan.epochs,
                "predicted_s": self.plan.predicted_seconds, "sec_per_step": self.sec_per_step,
                "val_seconds": self.val_seconds, "save_seconds": self.save_seconds,
                "calibration_seconds": self.calibration_seconds, "plans": self.plans}

    def restore(self, saved: dict[str, Any] | None) -> bool:
        """Keep a saved plan (no new probe, no re-plan); False when there is none."""
        if saved is None:
            return False
        self.minutes = float(saved["minutes"]) if self.minutes is None else self.minutes
        self.plan = BudgetPlan(int(saved["total_steps"]), int(saved["epochs"]), float(saved["predicted_s"]))
        self.sec_per_step = float(saved["sec_per_step"])
        self.val_seconds, self.save_seconds = float(saved["val_seconds"]), float(saved["save_seconds"])
        self.calibration_seconds = float(saved.get("calibration_seconds", 0.0))  # older checkpoints: none
        self.plans = int(saved["plans"])
        self.step_checked = self.val_checked = True
        self.follow_drift = False
        return True
