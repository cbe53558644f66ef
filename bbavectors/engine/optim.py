r"""Optimiser and learning-rate schedule from :class:`~bbavectors.config.TrainConfig`.

Learning rate and batch size
----------------------------
``train.lr`` is the rate for ``train.base_batch_size`` images per optimiser step. With ``N``
processes of ``train.batch_size`` images each, the global batch is ``G = N * batch_size`` and the rate
used is scaled linearly::

    lr_effective = lr * G / base_batch_size

(e.g. ``lr 1.25e-4``, base 16, 8 GPUs x 16 images: ``1e-3``). Keep ``base_batch_size`` with the
``lr`` it was tuned for and the same config works on 1 or 8 GPUs.

Schedule (per optimiser step, so that it does not jump at epoch boundaries)
---------------------------------------------------------------------------
``factor(step)`` multiplies ``lr_effective``; ``W = round(warmup_epochs * steps_per_epoch)`` warm-up
steps, ``T = epochs * steps_per_epoch`` steps in all, ``E = steps_per_epoch``::

    warm-up  (step < W):  (step + 1) / W                     linear, never exactly 0
    cosine:               f + (1 - f) * (1 + cos(pi * p)) / 2,   f = final_factor,
                          p = p0 + (1 - p0) * (step - A) / (T - A)
    exponential:          gamma ** ((step - W) / E)          the original's per-epoch gamma, smoothly
    constant:             1

with ``A = W`` and ``p0 = 0`` unless the remaining part was re-shaped (:meth:`WarmupSchedule.reshape`,
used by the time budget): then ``A`` is the step of the re-plan and ``p0`` the cosine's phase there,
so the curve never jumps and stays one cosine in its phase, the rest only stretched or compressed to
end at the new ``T``; a re-plan to the same end changes nothing. (Before, a re-plan restarted a
half-cosine from the current factor, flat at its start: a 45-minute run that re-planned 27 times as
its machine's step time wandered kept 55 % of the peak rate at 83 % of its steps and annealed in the
last few hundred. Checkpoints of that version resume on their own curve.)

The schedule depends only on the step count, so a resumed run follows the same curve.

Parameter groups: weight decay only on weights with 2+ dimensions (convolutions); biases and
normalisation parameters are not decayed, as is usual for detectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..config import TrainConfig

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "effective_lr",
    "parameter_groups",
    "build_optimizer",
    "WarmupSchedule",
    "build_scheduler",
    "schedule_from_config",
]

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw")
SCHEDULES: tuple[str, ...] = ("cosine", "exponential", "constant")
#: Cosine schedules end at this fraction of the peak rate (not 0: the last epochs still learn).
DEFAULT_FINAL_FACTOR = 0.01


def effective_lr(cfg: TrainConfig, global_batch: int) -> float:
    """``cfg.lr * global_batch / cfg.base_batch_size`` (module docstring)."""
    if global_batch <= 0 or cfg.base_batch_size <= 0:
        raise ValueError(f"batch sizes must be positive (global {global_batch}, base {cfg.base_batch_size})")
    return cfg.lr * global_batch / cfg.base_batch_size


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Trainable parameters split into decayed (ndim >= 2) and not decayed (biases, norms)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig, global_batch: int) -> torch.optim.Optimizer:
    """Adam or AdamW at :func:`effective_lr`; ``fused`` kernels on CUDA when available."""
    name = cfg.optimizer.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    lr = effective_lr(cfg, global_batch)
    groups = parameter_groups(model, cfg.weight_decay)
    on_cuda = next(model.parameters()).device.type == "cuda"
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr, fused=on_cuda or None)  # type: ignore[arg-type]


@dataclass
class WarmupSchedule:
    """``factor(step)`` of the module docstring; a picklable callable of plain fields.

    LambdaLR saves a callable object's ``__dict__`` in its state dict, so these plain numbers
    travel inside checkpoints (loadable with ``weights_only=True``).
    """

    total_steps: int
    warmup_steps: int
    steps_per_epoch: int
    schedule: str = "cosine"
    gamma: float = 0.96
    final_factor: float = DEFAULT_FINAL_FACTOR
    #: Start of the cosine part (-1: the end of the warm-up), its factor and its phase ``p0`` there
    #: (re-shaped runs). A phase of -1 with an anchor step marks a checkpoint written before the phase
    #: existed: its curve is a half-cosine from ``anchor_factor`` (module docstring).
    anchor_step: int = -1
    anchor_factor: float = 1.0
    anchor_phase: float = -1.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.total_steps <= 0 or self.steps_per_epoch <= 0:
            raise ValueError(f"total_steps ({self.total_steps}) and steps_per_epoch ({self.steps_per_epoch}) "
                             "must be positive")
        if not 0 <= self.warmup_steps:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 < self.gamma <= 1 and self.schedule == "exponential":
            raise ValueError(f"train.gamma must be in (0, 1], got {self.gamma}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        after = step - self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "exponential":
            return float(self.gamma ** (after / self.steps_per_epoch))
        f = self.final_factor
        if self._earlier_curve:
            return f + (self.anchor_factor - f) * 0.5 * (1 + math.cos(math.pi * self._progress(step)))
        return f + (1.0 - f) * 0.5 * (1 + math.cos(math.pi * self.phase(step)))

    @property
    def _earlier_curve(self) -> bool:
        """Re-shaped by a version before the phase existed (a half-cosine from ``anchor_factor``)."""
        return self.anchor_step >= 0 and self.anchor_phase < 0

    def _progress(self, step: int) -> float:
        """Share of the cosine part from its anchor to the end done at ``step``, in ``[0, 1]``."""
        anchor = self.warmup_steps if self.anchor_step < 0 else self.anchor_step
        return min(1.0, max(0, step - anchor) / max(1, self.total_steps - anchor))

    def phase(self, step: int) -> float:
        """The cosine's phase ``p`` at ``step`` (0 at the end of the warm-up, 1 at the end)."""
        if self._earlier_curve:
            # The phase of the cosine through that curve's current factor.
            f = self.final_factor
            if f >= 1.0:
                return self._progress(step)
            c = 2.0 * (self(step) - f) / (1.0 - f) - 1.0
            return math.acos(min(1.0, max(-1.0, c))) / math.pi
        p0 = max(0.0, self.anchor_phase) if self.anchor_step >= 0 else 0.0
        return p0 + (1.0 - p0) * self._progress(step)

    def reshape(self, step: int, total_steps: int) -> None:
        """End the schedule at ``total_steps`` without changing the factors of steps before ``step``.

        In the warm-up only the end moves; after it, the cosine keeps its phase at ``step`` and the
        rest of it is stretched or compressed to reach ``final_factor`` at ``total_steps`` (a shorter
        run decays faster, a longer one slower, never upwards; the same end changes nothing).
        Exponential and constant schedules only change length.
        """
        total_steps = max(int(total_steps), step + 1)
        if self.schedule == "cosine" and step > self.warmup_steps:
            phase, factor = self.phase(step), self(step)
            self.anchor_step, self.anchor_factor, self.anchor_phase = step, factor, phase
        self.total_steps = total_steps


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    steps_per_epoch: int,
    final_factor: float = DEFAULT_FINAL_FACTOR,
    schedule: WarmupSchedule | None = None,
    start_step: int = 0,
) -> LambdaLR:
    """Per-step :class:`LambdaLR` over ``cfg.epochs * steps_per_epoch`` steps (call ``.step()`` per batch).

    Args:
        schedule: the curve (default: :func:`schedule_from_config`).
        start_step: steps already taken (resume): the learning rate starts at ``factor(start_step)``.
            Each param group's ``initial_lr`` must then hold its base rate (the scheduler reads it).
    """
    if schedule is None:
        schedule = schedule_from_config(cfg, steps_per_epoch, final_factor)
    return LambdaLR(optimizer, schedule, last_epoch=start_step - 1)


def schedule_from_config(cfg: TrainConfig, steps_per_epoch: int,
                         final_factor: float = DEFAULT_FINAL_FACTOR) -> WarmupSchedule:
    """The :class:`WarmupSchedule` of ``cfg`` (``cfg.epochs`` epochs of ``steps_per_epoch`` steps)."""
    return WarmupSchedule(
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        schedule=cfg.schedule.lower(),
        gamma=cfg.gamma,
        final_factor=final_factor,
    )
