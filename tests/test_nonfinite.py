"""The non-finite step guard on its own: the finiteness rule, BatchNorm statistics restored on a skip,
skips counted in a row and in all, and the stop after ``max_in_row`` with a message naming the step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bbavectors.engine.nonfinite import NonFiniteGuard, NonFiniteLossError


def test_is_finite_rule() -> None:
    assert NonFiniteGuard.is_finite(1.0, 2.0)
    assert not NonFiniteGuard.is_finite(math.nan, 2.0)
    assert not NonFiniteGuard.is_finite(1.0, math.inf)
    # fp16: the GradScaler handles overflowing gradients, only the loss is checked.
    assert NonFiniteGuard.is_finite(1.0, math.inf, check_grad=False)
    assert not NonFiniteGuard.is_finite(-math.inf, 1.0, check_grad=False)


def test_reject_restores_batchnorm_statistics_and_accept_moves_the_restore_point() -> None:
    bn = nn.BatchNorm1d(2)
    guard = NonFiniteGuard(list(bn.buffers()), max_in_row=5, log=False)
    bn(torch.ones(4, 2) * 3)  # a good step moves the running mean
    guard.accept()
    good = bn.running_mean.clone()
    assert not torch.equal(good, torch.zeros(2))
    bn(torch.full((4, 2), math.nan))  # a bad step poisons it
    assert torch.isnan(bn.running_mean).all()
    guard.reject({"loss": math.nan}, "step 1 (epoch 1)")
    assert torch.equal(bn.running_mean, good)
    assert (guard.total, guard.in_row) == (1, 1)
    guard.accept()
    assert (guard.total, guard.in_row) == (1, 0)


def test_too_many_in_a_row_stop_with_the_step_and_the_hint() -> None:
    guard = NonFiniteGuard([], max_in_row=3, log=False)
    guard.reject({"loss": math.nan}, "step 4 (epoch 1)")
    guard.accept()  # a good step in between resets the row
    guard.reject({"loss": math.nan}, "step 6 (epoch 1)")
    guard.reject({"loss": math.inf, "grad_norm": 1.0}, "step 7 (epoch 1)")
    pattern = r"3 non-finite losses in a row .*last at step 8 \(epoch 2\): loss nan.*Lower train.lr"
    with pytest.raises(NonFiniteLossError, match=pattern):
        guard.reject({"loss": math.nan}, "step 8 (epoch 2)", "Lower train.lr. ")
    assert guard.total == 4
