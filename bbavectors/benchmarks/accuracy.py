"""Accuracy benchmark: our recipe vs Ultralytics YOLO-OBB, same data, same budget, same evaluator.

One run on one machine (:func:`run_accuracy_benchmark`):

* **ours**: ``tools/train.py --config CONFIG --data DATA`` in a subprocess, on the training split,
  stopped by the wall-clock budget (``--time MINUTES``); the last checkpoint is scored.
* **the peer**: Ultralytics YOLOv8n-OBB and YOLO11n-OBB built from their model YAML (random weights:
  nothing is downloaded, ``YOLO_OFFLINE=1``, no AMP check, no plots), trained on the same images
  converted by ``tools/convert_dataset.py --to yolo-obb`` with Ultralytics' own ``time=`` budget (hours)
  at the same input size and batch; its ``last.pt`` is scored.
* **scoring**: every model predicts each validation image at batch 1 (ours: letterbox + model +
  decode; YOLO: ``model.predict`` with ``conf=0.001, max_det=300``), the detections go through
  :func:`DOTA_devkit.eval.evaluate_task1` (VOC07 11-point AP and area AP at polygon IoU 0.5), and the
  median wall time per image after a warm-up is the inference time (decoded image in memory to
  polygons in image pixels, pre- and post-processing included, same threads for every model).

Ultralytics is optional (``pip install -e ".[bench]"``); without it the peer rows are skipped with
the reason recorded. The YOLO part is the only code that imports it.

Parts: the settings and table rows in :mod:`.accuracy_settings`, the scoring in :mod:`.task1_scoring`,
the YOLO side in :mod:`.yolo_peer`; ours and the run here. CLI: ``tools/benchmark.py accuracy``
(docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from DOTA_devkit.eval import load_ground_truth

from ..checkpoint import load_checkpoint
from ..data.dataset import list_images, read_split_file
from ..inference.predictor import Predictor
from ..runtime import cpu_has_bf16, cpu_model_name
from .accuracy_settings import (
    DEFAULT_YOLO_MODELS,
    REPO_ROOT,
    AccuracyResult,
    AccuracySettings,
    BenchmarkError,
    HardwareInfo,
    ModelScore,
    package_version,
)
from .accuracy_settings import run_tool as _run_tool
from .task1_scoring import collect_task1, predict_and_score, score_predictions
from .yolo_peer import convert_for_yolo, train_and_score_yolo, yolo_obb_to_detections, yolo_rows

__all__ = [
    "DEFAULT_YOLO_MODELS",
    "AccuracySettings",
    "ModelScore",
    "HardwareInfo",
    "AccuracyResult",
    "BenchmarkError",
    "yolo_obb_to_detections",
    "collect_task1",
    "score_predictions",
    "hardware_info",
    "train_ours",
    "score_ours",
    "convert_for_yolo",
    "train_and_score_yolo",
    "run_accuracy_benchmark",
    "format_accuracy_table",
]

logger = logging.getLogger(__name__)


def hardware_info(device: str, threads: int | None) -> HardwareInfo:
    """Where the numbers were measured (CPU model, cores, bf16, GPU, library versions)."""
    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
    return HardwareInfo(cpu=cpu_model_name(), cores=os.cpu_count() or 1,
                        threads=threads if threads is not None else torch.get_num_threads(),
                        bf16=cpu_has_bf16(), device=device, gpu=gpu, torch=torch.__version__,
                        ultralytics=package_version("ultralytics"), python=platform.python_version())


# ------------------------------------------------------------------------------ ours
def train_ours(settings: AccuracySettings) -> Path:
    """Train the recipe through ``tools/train.py`` (subprocess); returns its run folder."""
    runs = settings.work_dir / "runs"
    run_dir = runs / "ours"
    if run_dir.exists():
        raise BenchmarkError(f"{run_dir} exists: give a fresh work folder")
    # A split file that does not exist turns the trainer's validation off.
    no_val = settings.work_dir / "no_validation.txt"
    val_split = Path(settings.val_split) if settings.validate_in_training else no_val
    args = [str(REPO_ROOT / "tools" / "train.py"), "--config", str(settings.config),
            "--data", str(settings.data),
            "--set", f"data.train_split={Path(settings.train_split).resolve()}",
            f"data.val_split={val_split.resolve()}",
            "--runs-dir", str(runs), "--name", "ours", "--device", settings.device,
            "--workers", str(settings.workers), "--seed", str(settings.seed), "--quiet"]
    if settings.minutes is not None:
        args += ["--time", f"{settings.minutes:g}"]
    if settings.max_epochs is not None:
        args += ["--epochs", str(settings.max_epochs)]
    if settings.threads is not None:
        args += ["--threads", str(settings.threads)]
    if settings.amp is not None:
        args += ["--amp", settings.amp]
    if settings.input_size is not None:
        args += ["--input-size", str(settings.input_size)]
    if settings.batch_size is not None:
        args += ["--batch-size", str(settings.batch_size)]
    for item in settings.overrides:
        args += ["--set", item]
    _run_tool(args, settings.work_dir / "logs" / "train_ours.log", "training ours")
    return run_dir


def _epochs_of(checkpoint: dict[str, Any]) -> float | None:
    steps, per_epoch = checkpoint.get("step"), checkpoint.get("steps_per_epoch")
    if isinstance(steps, int) and isinstance(per_epoch, int) and per_epoch > 0:
        return steps / per_epoch
    epoch = checkpoint.get("epoch")
    return float(epoch) if isinstance(epoch, (int, float)) else None


def score_ours(run_dir: Path, settings: AccuracySettings, images: dict[str, Path],
               classes: Sequence[str]) -> ModelScore:
    """Score a run's ``last.pt`` (the state the budget left; ``best.pt`` would pick by the validation
    split, which is the test here) on the validation images."""
    ckpt_path = run_dir / "last.pt"
    if not ckpt_path.is_file():
        raise BenchmarkError(f"no checkpoint {ckpt_path}: did the run finish an epoch?")
    checkpoint = load_checkpoint(ckpt_path, map_location="cpu")
    predictor = Predictor.from_checkpoint(ckpt_path, device=settings.device, batch_size=1,
                                          amp=settings.inference_amp, tta=settings.tta)
    if tuple(predictor.classes) != tuple(classes):
        raise BenchmarkError(f"{ckpt_path}: classes {predictor.classes} differ from {tuple(classes)}")
    per_image, ms, result = predict_and_score(lambda im: predictor.predict_images([im])[0], images, classes,
                                              settings.label_dir, warmup=settings.warmup_images,
                                              timed=settings.timed_images)
    backbone = predictor.cfg.model.backbone
    onnx_ms, onnx_ap07, onnx_note = score_exported(ckpt_path, settings, images, classes)
    return ModelScore(
        model=f"bbavectors {backbone} (w{predictor.cfg.model.head_width}"
              + (", angle head" if predictor.cfg.model.angle_head else "") + f", {_precision(predictor)}"
              + (f", tta {settings.tta})" if settings.tta != "none" else ")"),
        params=predictor.num_parameters, budget_minutes=settings.minutes,
        train_seconds=_train_seconds(run_dir), epochs=_epochs_of(checkpoint), ap07=result.map07,
        ap_area=result.map_area, recall=result.mean_recall_present, ms_per_image=ms,
        onnx_ms_per_image=onnx_ms, onnx_ap07=onnx_ap07,
        onnx_note=onnx_note, input_size=predictor.input_size,
        detections=sum(len(d["scores"]) for _, d in per_image), checkpoint=str(ckpt_path))


def _precision(predictor: Predictor) -> str:
    return "float32" if predictor.amp_dtype is None else str(predictor.amp_dtype).removeprefix("torch.")


def score_exported(ckpt_path: Path, settings: AccuracySettings, images: dict[str, Path],
                   classes: Sequence[str]) -> tuple[float | None, float | None, str | None]:
    """Export ``ckpt_path`` to ONNX (decoder inside) and time and score it with onnxruntime on the
    CPU, as a user shipping the model would run it: ``(ms per image, AP07, None)``, or
    ``(None, None, why)`` when it cannot be measured here (a GPU run, onnxruntime missing, the export
    failing: logged, the row keeps its PyTorch numbers)."""
    if not settings.onnx:
        return None, None, "not asked for (--no-onnx)"
    if settings.device != "cpu":
        return None, None, "measured on the CPU only"
    if importlib.util.find_spec("onnxruntime") is None:
        return None, None, "onnxruntime is not installed (pip install -e \".[export]\")"
    from ..export.onnx_export import export_checkpoint

    path = settings.work_dir / "ours.onnx"
    try:
        export_checkpoint(ckpt_path, path)
        predictor = Predictor.from_onnx(path, batch_size=1, threads=settings.threads)
    except Exception as error:  # noqa: BLE001 - an export failure must not lose the training's scores
        logger.warning("ONNX export of %s failed, no ONNX timing: %s", ckpt_path, error)
        return None, None, f"export failed: {error}"
    _, ms, result = predict_and_score(lambda im: predictor.predict_images([im])[0], images, classes,
                                      settings.label_dir, warmup=settings.warmup_images,
                                      timed=settings.timed_images)
    return ms, result.map07, None


def _train_seconds(run_dir: Path) -> float | None:
    log = run_dir.parent.parent / "logs" / "train_ours.log"
    if not log.is_file():
        return None
    match = re.search(r"step\(s\) in (\d+(?:\.\d+)?) s", log.read_text(encoding="utf-8", errors="replace"))
    return float(match.group(1)) if match else None


# ------------------------------------------------------------------------------ the run
def _val_images(settings: AccuracySettings) -> dict[str, Path]:
    ids = read_split_file(settings.val_split)
    index = list_images(Path(settings.data) / "images")
    missing = [i for i in ids if i not in index]
    if missing:
        raise FileNotFoundError(f"{settings.val_split}: {len(missing)} id(s) without an image, "
                                f"e.g. {missing[0]}")
    if not ids:
        raise ValueError(f"{settings.val_split}: no image ids")
    return {i: index[i] for i in ids}


def _recipe_sizes(settings: AccuracySettings) -> tuple[int, int, tuple[str, ...]]:
    from ..config import apply_overrides, load_config
    from ..engine.trainer import resolve_classes

    cfg = apply_overrides(load_config(settings.config), list(settings.overrides))
    classes = resolve_classes(cfg.data.classes, Path(settings.data))
    return (settings.input_size or cfg.data.input_size, settings.batch_size or cfg.train.batch_size, classes)


def run_accuracy_benchmark(settings: AccuracySettings) -> AccuracyResult:
    """Train and score ours and the YOLO models one after the other (module docstring).

    A stage that fails for a reason outside this run (Ultralytics missing, the converter missing) is
    recorded as a skipped row; a failing training of ours raises :class:`BenchmarkError`.
    """
    settings.check()
    settings = settings.absolute()
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    images = _val_images(settings)
    input_size, batch_size, classes = _recipe_sizes(settings)
    ground_truth = load_ground_truth(settings.label_dir, list(images))
    val_objects = sum(1 for g in ground_truth.values() for o in g.objects if not o.difficult)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    rows: list[ModelScore] = []
    if settings.run_ours:
        run_dir = settings.work_dir / "runs" / "ours" if settings.score_only else train_ours(settings)
        rows.append(score_ours(run_dir, settings, images, classes))
    if settings.run_yolo:
        rows += yolo_rows(settings, input_size, batch_size, images, classes)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()}
    return AccuracyResult(rows, hardware_info(settings.device, settings.threads), record, len(images),
                          val_objects)

def _fmt(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_accuracy_table(result: AccuracyResult) -> str:
    """Markdown table of the rows, then the hardware line."""
    header = ("| model | params (M) | input | budget (min) | trained (min) | epochs | AP07 | AP area "
              "| recall | ms/image | ONNX ms/image |")
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result.rows:
        if r.skipped:
            lines.append(f"| {r.model} | skipped: {r.skipped} |  |  |  |  |  |  |  |  |  |")
            continue
        lines.append(
            f"| {r.model} | {_fmt(r.params and r.params / 1e6, '.2f')} | {_fmt(r.input_size, 'd')} "
            f"| {_fmt(r.budget_minutes, 'g')} | {_fmt(r.train_seconds and r.train_seconds / 60, '.1f')} "
            f"| {_fmt(r.epochs, '.2f')} | {_fmt(r.ap07, '.4f')} | {_fmt(r.ap_area, '.4f')} "
            f"| {_fmt(r.recall, '.4f')} "
            f"| {_fmt(r.ms_per_image, '.1f')} | {_fmt(r.onnx_ms_per_image, '.1f')} |")
    h = result.hardware
    lines.append("")
    lines.append(f"validation: {result.val_images} images, {result.val_objects} objects; AP: DOTA Task1, "
                 f"polygon IoU 0.5; ms/image: median at batch 1 on {h.device} (PyTorch; ONNX: "
                 f"onnxruntime on the CPU, decoder in the graph)")
    lines.append(f"hardware: {h.cpu}, {h.cores} cores, {h.threads} thread(s), "
                 f"bf16 {'yes' if h.bf16 else 'no'}"
                 f"{', GPU ' + h.gpu if h.gpu else ''}; torch {h.torch}, ultralytics {h.ultralytics or '-'}, "
                 f"python {h.python}")
    return "\n".join(lines)
