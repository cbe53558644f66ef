"""Deployment: ONNX export with the decoder inside, a torch-free ONNX runner, export checks.

Attributes are imported on first use so that ``from bbavectors.export import OnnxDetector`` (the
runner: numpy, OpenCV and onnxruntime only) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ExportWrapper",
    "export_onnx",
    "export_checkpoint",
    "OnnxDetector",
    "OnnxModelInfo",
    "ExportCheck",
    "compare_detections",
    "check_export",
]

_WHERE = {
    "ExportWrapper": "onnx_export",
    "export_onnx": "onnx_export",
    "export_checkpoint": "onnx_export",
    "OnnxDetector": "onnx_runner",
    "OnnxModelInfo": "onnx_runner",
    "ExportCheck": "check",
    "compare_detections": "check",
    "check_export": "check",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
