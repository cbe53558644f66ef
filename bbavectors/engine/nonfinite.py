r"""Skip optimiser steps whose loss or gradient norm is NaN / infinite, and stop after too many in a row.

The guard sees each step's loss and gradient norm (already summed over ranks, so every rank decides
the same). A good step: :meth:`NonFiniteGuard.accept` snapshots the BatchNorm buffers. A bad step:
:meth:`NonFiniteGuard.reject` restores them (running statistics move in the forward pass, before the
loss is known, so NaN must not stay in them), counts the skip, logs it, and raises
:class:`NonFiniteLossError` after ``max_in_row`` skips in a row. The caller zeroes the gradients and
advances the step count and schedule as usual (the learning-rate curve depends on the step only).

With fp16 the GradScaler skips steps with overflowing *gradients* by itself: then only the loss is
checked here (``check_grad=False``).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

__all__ = ["NonFiniteLossError", "NonFiniteGuard"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """``train.max_nonfinite`` steps in a row had a NaN / infinite loss or gradient."""


class NonFiniteGuard:
    """Counts and undoes non-finite steps (module docstring).

    Args:
        buffers: the model's buffers (BatchNorm running statistics), restored on a skipped step.
        max_in_row: skips in a row that stop the run (``train.max_nonfinite``).
        log: emit the warning (rank 0 only).
    """

    def __init__(self, buffers: list[Tensor], max_in_row: int, log: bool = True) -> None:
        self.buffers = buffers
        self.backup = [b.detach().clone() for b in buffers]
        self.max_in_row = max_in_row
        self.log = log
        self.total = 0
        self.in_row = 0

    @staticmethod
    def is_finite(loss: float, grad_norm: float, check_grad: bool = True) -> bool:
        """True when the step may be taken."""
        return math.isfinite(loss) and (not check_grad or math.isfinite(grad_norm))

    @torch.no_grad()
    def accept(self) -> None:
        """A step was taken: its buffers are the new restore point."""
        if self.buffers:
            torch._foreach_copy_(self.backup, self.buffers)
        self.in_row = 0

    @torch.no_grad()
    def reject(self, values: dict[str, float], where: str, hint: str = "") -> None:
        """A step was skipped: restore the buffers, count it, raise after ``max_in_row`` in a row.

        Args:
            values: the step's loss parts and gradient norm (for the message).
            where: e.g. ``"step 12 (epoch 2)"``.
            hint: appended to the error (what the user can change).
        Raises:
            NonFiniteLossError: ``max_in_row`` skips in a row.
        """
        if self.buffers:
            torch._foreach_copy_(self.buffers, self.backup)
        self.total += 1
        self.in_row += 1
        desc = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        if self.log:
            logger.warning("non-finite loss or gradient at %s: %s; step skipped (%d in a row, %d in all)",
                           where, desc, self.in_row, self.total)
        if self.in_row >= self.max_in_row:
            raise NonFiniteLossError(
                f"{self.in_row} non-finite losses in a row (train.max_nonfinite = {self.max_in_row}), "
                f"last at {where}: {desc}. {hint}The last good checkpoint is untouched.")
