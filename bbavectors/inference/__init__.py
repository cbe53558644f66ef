"""Inference: a checkpoint's (or an exported ONNX graph's) model with its preprocessing and decoding
(:class:`Predictor`, the one path from image to detections), whole
scenes with sliding windows cut on the fly (:func:`predict_scene`), and test runs that write DOTA
Task1 files, pictures, a zip for the DOTA server and the local mAP (:func:`run_inference`).

``bbavectors.inference.runner`` (which needs ``DOTA_devkit``'s evaluation tools) is imported on use.
"""

from .predictor import (
    AMP_MODES,
    CheckpointLoadError,
    Detections,
    OnnxBackend,
    Predictor,
    concat_detections,
    default_batch_size,
    detections_to,
    empty_detections,
    letterbox_tensor,
    resolve_device,
)
from .scenes import DOTA_MERGE_NMS_THRESH, SceneSettings, Window, predict_scene, scene_windows

__all__ = [
    "AMP_MODES",
    "CheckpointLoadError",
    "Detections",
    "OnnxBackend",
    "Predictor",
    "concat_detections",
    "default_batch_size",
    "detections_to",
    "empty_detections",
    "letterbox_tensor",
    "resolve_device",
    "DOTA_MERGE_NMS_THRESH",
    "SceneSettings",
    "Window",
    "predict_scene",
    "scene_windows",
]
