"""``usable_cores``: one torch-free implementation shared by the PyTorch side and the ONNX runner."""

from __future__ import annotations

import os

import pytest

from bbavectors import cpu_cores, runtime
from bbavectors.export import onnx_runner


def test_one_implementation_for_torch_and_onnx() -> None:
    assert runtime.usable_cores is cpu_cores.usable_cores
    assert onnx_runner.usable_cores is cpu_cores.usable_cores


def test_affinity_mask_limits_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container or ``taskset`` allowing 1 core of many must give 1 thread, not the machine's count."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cpu_cores.usable_cores() == 1


def test_without_affinity_all_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert cpu_cores.usable_cores() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert cpu_cores.usable_cores() == 1
