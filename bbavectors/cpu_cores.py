"""The CPU cores this process may use; torch-free, so that the ONNX runner
(:mod:`bbavectors.export.onnx_runner`, NumPy + OpenCV + onnxruntime only) shares it with the
PyTorch side (:mod:`bbavectors.runtime`)."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container or ``taskset`` may allow
    fewer than the machine has; all cores where the platform has no affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
