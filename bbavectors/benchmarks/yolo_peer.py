"""The peer of the accuracy benchmark: Ultralytics YOLO-OBB built from its model YAML (random weights:
nothing is downloaded, ``YOLO_OFFLINE=1``, no AMP check, no plots), trained on the same images
converted by ``tools/convert_dataset.py --to yolo-obb`` with Ultralytics' own ``time=`` budget, and
scored by the same evaluator as ours. The only code that imports Ultralytics (an optional extra,
``pip install -e ".[bench]"``)."""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from ..inference.predictor import Detections
from ..runtime import cpu_has_bf16
from .accuracy_settings import (
    REPO_ROOT,
    AccuracySettings,
    BenchmarkError,
    ModelScore,
    package_version,
    run_tool,
)
from .task1_scoring import predict_and_score

__all__ = ["YOLO_CONF", "YOLO_MAX_DET", "yolo_obb_to_detections", "convert_for_yolo", "train_and_score_yolo",
           "yolo_optimizer_warning",
           "yolo_rows"]

#: The lowest threshold worth asking YOLO's predict for: AP integrates the whole PR curve.
YOLO_CONF = 0.001
YOLO_MAX_DET = 300

LOG = logging.getLogger(__name__)


def yolo_obb_to_detections(corners: ArrayLike, conf: ArrayLike, cls: ArrayLike,
                           yolo_names: dict[int, str], classes: Sequence[str]) -> Detections:
    """One image's YOLO-OBB result (``results[i].obb``) as our :data:`Detections`.

    Args:
        corners: ``(N, 4, 2)`` corner points ``xyxyxyxy`` in image pixels (or ``(N, 8)``).
        conf: ``(N,)`` scores; cls: ``(N,)`` YOLO class indices.
        yolo_names: YOLO's ``model.names`` (index -> name); classes: our class list.
    Returns:
        ``polygons (N, 8)`` float32, ``scores (N,)`` float32, ``classes (N,)`` int64 (our indices).
    Raises:
        ValueError: a class name that is not in ``classes``, or inconsistent lengths.
    """
    polys = np.asarray(corners, dtype=np.float64).reshape(-1, 8)
    scores = np.asarray(conf, dtype=np.float64).reshape(-1)
    yolo_cls = np.asarray(cls).reshape(-1).astype(np.int64)
    if not len(polys) == len(scores) == len(yolo_cls):
        raise ValueError(f"{len(polys)} boxes, {len(scores)} scores and {len(yolo_cls)} classes")
    index = {name: k for k, name in enumerate(classes)}
    ours = np.empty(len(yolo_cls), dtype=np.int64)
    for i, c in enumerate(yolo_cls):
        name = yolo_names.get(int(c))
        if name not in index:
            raise ValueError(f"YOLO class {int(c)} ({name!r}) is not in the class list {list(classes)}")
        ours[i] = index[name]
    return {"polygons": torch.from_numpy(polys.astype(np.float32)),
            "scores": torch.from_numpy(scores.astype(np.float32)),
            "classes": torch.from_numpy(ours)}


def convert_for_yolo(settings: AccuracySettings, classes: Sequence[str]) -> Path:
    """The project's converter writes the YOLO-OBB copy (symlinked images, YOLO class k = our class k,
    fixed by a class file in the work folder); returns its data.yaml."""
    out = settings.work_dir / "yolo_data"
    converter = REPO_ROOT / "tools" / "convert_dataset.py"
    if not converter.is_file():
        raise BenchmarkError(f"{converter} is missing: the DOTA -> YOLO-OBB converter is needed")
    args = [str(converter), "--from", "dota", "--to", "yolo-obb", "--src", str(settings.data),
            "--dst", str(out),
            "--splits", f"train={Path(settings.train_split).resolve()}",
            f"val={Path(settings.val_split).resolve()}", "--train-split", "train", "--val-split", "val"]
    class_file = settings.work_dir / "classes.txt"
    class_file.write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
    args += ["--classes", str(class_file), "--quiet"]
    run_tool(args, settings.work_dir / "logs" / "convert_yolo.log", "converting to YOLO-OBB")
    data_yaml = out / "data.yaml"
    if not data_yaml.is_file():
        raise BenchmarkError(f"the converter wrote no {data_yaml}")
    return data_yaml


def _prepare_ultralytics(work_dir: Path) -> None:
    """Nothing may be downloaded: offline mode, settings kept inside the work folder."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work_dir / "ultralytics_config"))
    os.environ.setdefault("MPLBACKEND", "Agg")


def _yolo_device(device: str) -> str:
    if device.startswith("cuda"):
        return device.split(":", 1)[1] if ":" in device else "0"
    return device


def _ultralytics_yolo(settings: AccuracySettings) -> Any:
    """Ultralytics' ``YOLO`` class, set up for this run (offline settings, the run's CPU threads)."""
    _prepare_ultralytics(settings.work_dir)
    # Ultralytics' select_device resets torch to min(8, cores - 1) threads on the CPU (1 on 2 cores):
    # give it the thread count every model gets.
    threads = settings.threads if settings.threads is not None else (os.cpu_count() or 1)
    setattr(importlib.import_module("ultralytics.utils.torch_utils"), "NUM_THREADS", threads)  # noqa: B010
    torch.set_num_threads(threads)
    # The optional dependency, imported only here (typed Any: mypy runs without it too).
    return importlib.import_module("ultralytics").YOLO


def yolo_optimizer_warning(settings: AccuracySettings, native_bf16: bool) -> str | None:
    """Why Ultralytics' ``optimizer=auto`` would make this YOLO run slow, or None.

    Under a time budget the run starts with 10,000 epochs (Ultralytics re-plans them after the first),
    so ``auto`` takes MuSGD, its choice for runs over 10,000 iterations; MuSGD orthogonalises each
    update with Newton-Schulz steps in bf16, emulated on a CPU without native bf16: measured on a
    2-core AVX2 CPU, 10.6 s per iteration of YOLOv8n-OBB at batch 8, of which the model's forward and
    backward take 2.5 s (docs/benchmarks.md, twenty-seventh round).
    """
    if settings.yolo_optimizer != "auto" or settings.minutes is None or not settings.device.startswith("cpu"):
        return None
    if native_bf16:
        return None
    return ("Ultralytics' optimizer=auto takes MuSGD under a time budget (it starts with 10,000 epochs); "
            "its bf16 Newton-Schulz step is emulated on this CPU without native bf16 and costs most of "
            "each iteration: --yolo-optimizer AdamW --yolo-lr0 0.002 is what auto picks for runs under "
            "10,000 iterations, as any 45-minute CPU run is")


def train_and_score_yolo(model_yaml: str, data_yaml: Path, settings: AccuracySettings, input_size: int,
                         batch_size: int, images: dict[str, Path], classes: Sequence[str]) -> ModelScore:
    """Train one YOLO-OBB from its YAML with Ultralytics' time budget, then score its ``last.pt``."""
    YOLO = _ultralytics_yolo(settings)
    name = Path(model_yaml).stem
    model: Any = YOLO(model_yaml)
    train_args: dict[str, Any] = dict(
        data=str(data_yaml), imgsz=input_size, batch=batch_size, device=_yolo_device(settings.device),
        workers=settings.workers, project=str(settings.work_dir / "yolo_runs"), name=name, exist_ok=True,
        pretrained=False, amp=False, plots=False, val=False, seed=settings.seed, deterministic=False,
        verbose=False, epochs=settings.max_epochs if settings.max_epochs is not None else 10_000,
        optimizer=settings.yolo_optimizer)
    if settings.yolo_lr0 is not None:
        train_args["lr0"] = settings.yolo_lr0
    warning = yolo_optimizer_warning(settings, cpu_has_bf16())
    if warning is not None:
        LOG.warning("%s", warning)
    if settings.minutes is not None:
        train_args["time"] = settings.minutes / 60.0
    start = time.perf_counter()
    model.train(**train_args)
    train_seconds = time.perf_counter() - start
    trainer: Any = model.trainer
    last = Path(trainer.last)
    if not last.is_file():
        raise BenchmarkError(f"Ultralytics wrote no {last}")
    epochs = float(getattr(trainer, "epoch", -1) + 1)
    return score_yolo(last, name, settings, input_size, images, classes, train_seconds, epochs)


def yolo_last_checkpoint(settings: AccuracySettings, model_yaml: str) -> Path:
    """Where :func:`train_and_score_yolo` leaves ``model_yaml``'s last weights in the work folder."""
    return settings.work_dir / "yolo_runs" / Path(model_yaml).stem / "weights" / "last.pt"


def score_yolo(last: Path, name: str, settings: AccuracySettings, input_size: int, images: dict[str, Path],
               classes: Sequence[str], train_seconds: float | None, epochs: float | None) -> ModelScore:
    """Time and score a trained YOLO-OBB checkpoint on the validation images."""
    if not last.is_file():
        raise BenchmarkError(f"no YOLO checkpoint {last}: did its training run in this work folder?")
    trained: Any = _ultralytics_yolo(settings)(str(last))
    if epochs is None:
        # Ultralytics stores the last finished epoch (0-based) in its checkpoints.
        epoch = torch.load(last, map_location="cpu", weights_only=False).get("epoch")
        epochs = float(epoch + 1) if isinstance(epoch, int) and epoch >= 0 else None
    yolo_names = {int(k): str(v) for k, v in trained.names.items()}
    device = _yolo_device(settings.device)

    def predict(image: NDArray[np.uint8]) -> Detections:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        result: Any = trained.predict(bgr, imgsz=input_size, conf=YOLO_CONF, max_det=YOLO_MAX_DET,
                                      device=device, verbose=False)[0]
        obb = result.obb
        return yolo_obb_to_detections(obb.xyxyxyxy.cpu().numpy(), obb.conf.cpu().numpy(),
                                      obb.cls.cpu().numpy(), yolo_names, classes)

    per_image, ms, result = predict_and_score(predict, images, classes, settings.label_dir,
                                              warmup=settings.warmup_images, timed=settings.timed_images)
    return ModelScore(
        model=name.replace(".yaml", ""), params=sum(p.numel() for p in trained.model.parameters()),
        budget_minutes=settings.minutes, train_seconds=train_seconds, epochs=epochs, ap07=result.map07,
        ap_area=result.map_area, recall=result.mean_recall_present, ms_per_image=ms, input_size=input_size,
        detections=sum(len(d["scores"]) for _, d in per_image), checkpoint=str(last))


def yolo_rows(settings: AccuracySettings, input_size: int, batch_size: int, images: dict[str, Path],
               classes: Sequence[str]) -> list[ModelScore]:
    if package_version("ultralytics") is None:
        reason = "ultralytics is not installed (pip install -e \".[bench]\")"
        return [ModelScore(model=Path(m).stem, skipped=reason) for m in settings.yolo_models]
    if settings.score_only:
        return [score_yolo(yolo_last_checkpoint(settings, m), Path(m).stem, settings, input_size, images,
                           classes, None, None) for m in settings.yolo_models]
    data_yaml = convert_for_yolo(settings, classes)
    return [train_and_score_yolo(m, data_yaml, settings, input_size, batch_size, images, classes)
            for m in settings.yolo_models]
