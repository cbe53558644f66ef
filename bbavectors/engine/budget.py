r"""Training time budget (``train.time_budget`` minutes, ``tools/train.py --time``).

A budgeted run ends near its budget with a *finished* learning-rate schedule, not a cut-off one:

1. The first :data:`PROBE_STEPS` steps (fewer when they take :data:`PROBE_MAX_SHARE` of the budget,
   or the first epoch is shorter) run on the config's schedule (warm-up first) while the step
   time is measured (the first :data:`PROBE_SKIP` steps, which pay for lazy start-up, are not timed).
2. :func:`plan_time_budget` picks the number of steps that fits in what is left of the budget,
   counting validation passes, checkpoint saves and the end-of-run centre calibration; the
   schedule is re-shaped to end there
   (:meth:`~bbavectors.engine.optim.WarmupSchedule.reshape`).
3. Once, after the first epoch, the plan is re-made from that epoch's measured step time and the
   measured checkpoint time, when the step time was off by more than :data:`REPLAN_TOLERANCE`
   (loader workers warming up); and once after the first validation when its measured time was off
   by as much. After that, whenever the step time of the last whole epoch(s) (at least 20 steps, the
   training loop only) drifts from the plan's by as much: a first epoch slower than the rest (a
   45-minute run stopped 4 minutes early on it) or a machine that gets busier. Only the remaining
   part of the schedule changes; the learning rate never jumps. A resumed run keeps its saved plan.

The budget clock starts when the process started (:func:`process_start_time`: interpreter start,
imports and data set generation included).
The chosen length is stored in every checkpoint (``"budget"``) and kept on resume (no new plan).

Validation cost before any validation ran: one validation batch is timed in eval mode (forward
only) and scaled by the number of validation batches times :data:`VAL_OVERHEAD` (decoding, NMS,
mAP and prediction pictures); the calibration (``train.calibration_images`` training images,
:mod:`bbavectors.engine.calibrate`) the same way.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

__all__ = ["BudgetPlan", "plan_time_budget", "validations_in", "process_start_time", "PROBE_STEPS",
           "PROBE_SKIP",           "REPLAN_TOLERANCE", "VAL_OVERHEAD", "PROBE_MAX_SHARE", "BUDGET_MARGIN"]

#: Steps run before the first plan; the first PROBE_SKIP of them are not timed.
PROBE_STEPS = 8
PROBE_SKIP = 2
#: A measured cost this far from its estimate (relative) triggers the one-time re-plan. (At 0.2 a
#: 45-minute run whose probe over-estimated the step time by 13 % stopped 6 minutes early.)
REPLAN_TOLERANCE = 0.05
#: The probe also ends once it used this share of the budget (slow machines, short budgets).
PROBE_MAX_SHARE = 0.05
#: Validation time per batch = eval forward time x this (decode, NMS, evaluation, pictures).
VAL_OVERHEAD = 3.0
#: Fraction of the budget kept free for the end of the run (summary, closing files, jitter).
BUDGET_MARGIN = 0.03


def process_start_time() -> float:
    """``time.time()`` at which this process started (Linux ``/proc``), so that the budget counts the
    interpreter's start and the imports too; ``time.time()`` now where ``/proc`` is absent."""
    try:
        with open(f"/proc/{os.getpid()}/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time after boot
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        started = time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
        return started if started <= time.time() else time.time()
    except (OSError, ValueError, IndexError):
        return time.time()


@dataclass(frozen=True)
class BudgetPlan:
    """How long a budgeted run trains.

    Attributes:
        total_steps: optimiser steps in the whole run (the schedule ends here).
        epochs: epochs in the whole run (the last may be partial when even one epoch does not fit).
        predicted_seconds: the run's predicted wall time from the budget clock's start.
    """

    total_steps: int
    epochs: int
    predicted_seconds: float


def validations_in(first_epoch: int, last_epoch: int, val_every: int) -> int:
    """Validations after epochs ``first_epoch..last_epoch`` (inclusive): each ``val_every``-th, the last."""
    if last_epoch < first_epoch:
        return 0
    every = max(1, val_every)
    count = last_epoch // every - (first_epoch - 1) // every
    return count + (0 if last_epoch % every == 0 else 1)


def plan_time_budget(
    budget_s: float,
    sec_per_step: float,
    steps_per_epoch: int,
    val_seconds: float,
    val_every: int,
    save_seconds: float,
    spent_s: float = 0.0,
    steps_done: int = 0,
    margin: float = BUDGET_MARGIN,
    final_seconds: float = 0.0,
) -> BudgetPlan:
    """The most steps that end within the budget (the last epoch may be partial).

    A run ending at step ``T`` in epoch ``E = ceil(T / steps_per_epoch)`` costs, from the budget
    clock's start::

        spent_s + (T - steps_done) * sec_per_step
                + validations_in(e0 + 1, E, val_every) * val_seconds + (E - e0) * save_seconds
                + final_seconds

    with ``e0 = steps_done // steps_per_epoch`` epochs already finished (their validations and saves
    are in ``spent_s``); it must be at most ``budget_s * (1 - margin)``. For each ``E`` the fixed
    costs are known, so ``T`` is the largest step count they leave room for, capped at the end of
    epoch ``E``; the plan is the largest ``T`` that falls inside its epoch. When nothing fits, one
    more step (the run must end saved and validated).

    Args:
        budget_s: the budget in seconds.
        sec_per_step: measured seconds per optimiser step.
        steps_per_epoch: optimiser steps per epoch.
        val_seconds: seconds per validation pass (0 when there is no validation split).
        val_every: ``train.val_every``.
        save_seconds: seconds per checkpoint save.
        spent_s: seconds used so far; steps_done: steps taken so far.
        final_seconds: work done once after the last step (the centre calibration).
    """
    if budget_s <= 0 or sec_per_step <= 0 or steps_per_epoch <= 0:
        raise ValueError(f"budget ({budget_s}), step time ({sec_per_step}) and steps per epoch "
                         f"({steps_per_epoch}) must be positive")
    limit = budget_s * (1.0 - margin)
    done_epochs = steps_done // steps_per_epoch

    def fixed(epochs: int) -> float:
        return (spent_s + validations_in(done_epochs + 1, epochs, val_every) * val_seconds
                + (epochs - done_epochs) * save_seconds + final_seconds)

    best: tuple[int, int] | None = None
    epochs = done_epochs + 1
    while True:
        steps = min(epochs * steps_per_epoch, steps_done + math.floor((limit - fixed(epochs)) / sec_per_step))
        if steps <= max((epochs - 1) * steps_per_epoch, steps_done):
            break  # ends before this epoch starts: later epochs cost even more
        best = (steps, epochs)
        epochs += 1
    if best is None:
        best = (steps_done + 1, math.ceil((steps_done + 1) / steps_per_epoch))
    steps, epochs = best
    return BudgetPlan(steps, epochs, fixed(epochs) + (steps - steps_done) * sec_per_step)
