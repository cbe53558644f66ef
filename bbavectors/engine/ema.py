r"""Exponential moving average (EMA) of the model's weights, validated and saved as ``"ema"``.

After each optimiser step: ``ema = d * ema + (1 - d) * weights`` for every floating-point parameter
and buffer (BatchNorm running statistics included); integer buffers (``num_batches_tracked``) are
copied. The decay ramps up as ``d = decay * (1 - exp(-updates / ramp))`` so that the first
hundreds of steps (random weights) do not dominate the average of a short run.

The average lives on the model's device, in float32 whatever the autocast dtype (autocast never
changes parameter dtypes). :func:`bbavectors.checkpoint.model_from_checkpoint` uses the ``"ema"``
weights when a checkpoint has them.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from ..runtime import unwrap_model

__all__ = ["ModelEMA"]

#: Updates over which the decay ramps up (1 - 1/e of the way after this many).
DEFAULT_RAMP = 2000


class ModelEMA:
    """Weight average of ``model`` (module docstring).

    Args:
        model: the trained model (may be wrapped in DDP / compiled; the plain module is copied).
        decay: the asymptotic decay (``train.ema_decay``), in ``[0, 1)``.
        ramp: updates over which the decay ramps up.
    """

    def __init__(self, model: nn.Module, decay: float, ramp: int = DEFAULT_RAMP) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {decay}")
        if ramp <= 0:
            raise ValueError(f"ramp must be positive, got {ramp}")
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.ramp = ramp
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / self.ramp))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights of ``model`` into the average."""
        d = self.current_decay()
        self.updates += 1
        source = unwrap_model(model).state_dict()
        averaged: list[Tensor] = []
        current: list[Tensor] = []
        for name, ema_value in self.module.state_dict().items():
            value = source[name].detach()
            if ema_value.dtype.is_floating_point:
                averaged.append(ema_value)
                current.append(value.to(ema_value.dtype))
            else:
                ema_value.copy_(value)
        if averaged:
            # lerp(ema, w, 1 - d) = d * ema + (1 - d) * w, one fused kernel per dtype/device.
            torch._foreach_lerp_(averaged, current, 1.0 - d)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights, with the plain model's key names."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor], updates: int) -> None:
        """Restore an average (and its update count, which sets the ramp)."""
        self.module.load_state_dict(state)
        self.updates = int(updates)
