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

CLI: ``tools/benchmark.py accuracy`` (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from DOTA_devkit.eval import Task1Result, evaluate_task1, load_ground_truth
from DOTA_devkit.task1 import ClassDetections

from ..checkpoint import load_checkpoint
from ..data.dataset import list_images, read_split_file
from ..data.image_io import read_image
from ..inference.predictor import Detections, Predictor
from ..runtime import cpu_has_bf16, cpu_model_name

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

#: The peer models, built from Ultralytics' model YAML (random initialisation).
DEFAULT_YOLO_MODELS: tuple[str, ...] = ("yolov8n-obb.yaml", "yolo11n-obb.yaml")
#: The lowest threshold worth asking YOLO's predict for: AP integrates the whole PR curve.
YOLO_CONF = 0.001
YOLO_MAX_DET = 300
REPO_ROOT = Path(__file__).resolve().parents[2]


class BenchmarkError(RuntimeError):
    """A stage of the benchmark failed (a tool's exit status, a missing output); one-line message."""


@dataclass
class AccuracySettings:
    """What to compare, on which data, with which budget.

    ``minutes`` is each model's training budget (wall clock); ``max_epochs`` caps the epochs as well
    (either may be None, not both). ``input_size`` / ``batch_size`` default to the recipe's.
    """

    data: Path
    train_split: Path
    val_split: Path
    work_dir: Path
    config: Path = REPO_ROOT / "configs" / "ssdd_resnet18.yaml"
    minutes: float | None = 45.0
    max_epochs: int | None = None
    device: str = "cpu"
    threads: int | None = None
    workers: int = 2
    input_size: int | None = None
    batch_size: int | None = None
    yolo_models: tuple[str, ...] = DEFAULT_YOLO_MODELS
    run_ours: bool = True
    run_yolo: bool = True
    warmup_images: int = 5
    timed_images: int | None = None
    seed: int = 0
    #: Our run's mixed precision; None: "none" on the CPU (bf16 autocast measured slower there,
    #: docs/benchmarks.md), the recipe's on a GPU. Ultralytics always runs with amp=False (offline).
    amp: str | None = None
    #: Let our run validate on the validation split while it trains (inside its budget). Off: the
    #: whole budget trains, as for YOLO (``val=False``); the scoring below is the same either way.
    validate_in_training: bool = False
    #: Also export our model to ONNX and time and score it in onnxruntime (CPU runs only).
    onnx: bool = True
    #: Extra ``section.key=value`` overrides for our run (``--set``).
    overrides: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise ValueError / FileNotFoundError naming the bad setting."""
        if self.minutes is None and self.max_epochs is None:
            raise ValueError("give a time budget (minutes) or max_epochs")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")
        if self.max_epochs is not None and self.max_epochs <= 0:
            raise ValueError(f"max_epochs must be positive, got {self.max_epochs}")
        for name in ("data", "train_split", "val_split", "config"):
            path = Path(getattr(self, name))
            if not path.exists():
                raise FileNotFoundError(f"{name} not found: {path}")
        if not (Path(self.data) / "labelTxt").is_dir():
            raise FileNotFoundError(f"{self.data}: no labelTxt/ folder")

    def absolute(self) -> AccuracySettings:
        """The same settings with absolute paths: the tools run in the repository folder, so a
        path relative to the caller's folder would name another place there."""
        return dataclasses.replace(
            self, data=Path(self.data).resolve(), train_split=Path(self.train_split).resolve(),
            val_split=Path(self.val_split).resolve(), work_dir=Path(self.work_dir).resolve(),
            config=Path(self.config).resolve())


@dataclass
class ModelScore:
    """One row of the table."""

    model: str
    params: int | None = None
    budget_minutes: float | None = None
    train_seconds: float | None = None
    epochs: float | None = None
    ap07: float | None = None
    ap_area: float | None = None
    ms_per_image: float | None = None
    #: The same model exported (decoder inside) and run by onnxruntime on the CPU: ms per image
    #: and its AP07 (equal to ``ap07`` up to float rounding); None where not measured, see
    #: ``onnx_note``.
    onnx_ms_per_image: float | None = None
    onnx_ap07: float | None = None
    onnx_note: str | None = None
    input_size: int | None = None
    detections: int | None = None
    checkpoint: str | None = None
    #: Why the row has no numbers (not installed, a tool failed...).
    skipped: str | None = None


@dataclass
class HardwareInfo:
    cpu: str
    cores: int
    threads: int
    bf16: bool
    device: str
    gpu: str | None
    torch: str
    ultralytics: str | None
    python: str


@dataclass
class AccuracyResult:
    rows: list[ModelScore]
    hardware: HardwareInfo
    settings: dict[str, Any]
    val_images: int
    val_objects: int

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [dataclasses.asdict(r) for r in self.rows],
                "hardware": dataclasses.asdict(self.hardware), "settings": self.settings,
                "val_images": self.val_images, "val_objects": self.val_objects}


# ------------------------------------------------------------------------------ YOLO -> Task1
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


def collect_task1(per_image: Sequence[tuple[str, Detections]], classes: Sequence[str]
                  ) -> dict[str, ClassDetections]:
    """``[(image id, Detections)]`` -> ``{class: ClassDetections}`` for every class (Task1 files in
    memory, empty classes included)."""
    ids: list[list[str]] = [[] for _ in classes]
    scores: list[list[NDArray[np.float64]]] = [[] for _ in classes]
    polys: list[list[NDArray[np.float64]]] = [[] for _ in classes]
    for image_id, dets in per_image:
        cls = dets["classes"].detach().cpu().numpy().reshape(-1)
        s = dets["scores"].detach().cpu().double().numpy().reshape(-1)
        p = dets["polygons"].detach().cpu().double().numpy().reshape(-1, 8)
        for c in np.unique(cls):
            if not 0 <= c < len(classes):
                raise ValueError(f"{image_id}: class index {int(c)} outside [0, {len(classes)})")
            sel = cls == c
            ids[int(c)] += [image_id] * int(sel.sum())
            scores[int(c)].append(s[sel])
            polys[int(c)].append(p[sel])
    return {name: ClassDetections(ids[k], np.concatenate(scores[k]) if scores[k] else np.zeros(0),
                                  np.concatenate(polys[k]) if polys[k] else np.zeros((0, 8)))
            for k, name in enumerate(classes)}


def score_predictions(per_image: Sequence[tuple[str, Detections]], classes: Sequence[str],
                      label_dir: Path, image_ids: Sequence[str]) -> Task1Result:
    """DOTA Task1 evaluation (VOC07 and area AP at IoU 0.5) of per-image detections."""
    ground_truth = load_ground_truth(label_dir, list(image_ids))
    return evaluate_task1(collect_task1(per_image, classes), ground_truth, classes)


def _timed_predictions(predict: Callable[[NDArray[np.uint8]], Detections], images: dict[str, Path],
                       warmup: int, timed: int | None) -> tuple[list[tuple[str, Detections]], float]:
    """Run ``predict`` on every image (RGB uint8) at batch 1; returns the detections and the median ms
    of the timed calls (the first ``warmup`` calls on the first image are not timed)."""
    ids = list(images)
    first = read_image(images[ids[0]])
    for _ in range(warmup):
        predict(first)
    out: list[tuple[str, Detections]] = []
    times: list[float] = []
    for k, image_id in enumerate(ids):
        image = read_image(images[image_id])
        start = time.perf_counter()
        dets = predict(image)
        elapsed = time.perf_counter() - start
        if timed is None or k < timed:
            times.append(elapsed)
        out.append((image_id, dets))
    return out, 1000.0 * statistics.median(times)


def _predict_and_score(predict: Callable[[NDArray[np.uint8]], Detections], settings: AccuracySettings,
                       images: dict[str, Path], classes: Sequence[str]
                       ) -> tuple[list[tuple[str, Detections]], float, Task1Result]:
    """:func:`_timed_predictions` then :func:`score_predictions` against the data's labels: the same
    steps for every model; returns the detections, the median ms per image and the evaluation."""
    per_image, ms = _timed_predictions(predict, images, settings.warmup_images, settings.timed_images)
    result = score_predictions(per_image, classes, Path(settings.data) / "labelTxt", list(images))
    return per_image, ms, result


# ------------------------------------------------------------------------------ environment
def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def hardware_info(device: str, threads: int | None) -> HardwareInfo:
    """Where the numbers were measured (CPU model, cores, bf16, GPU, library versions)."""
    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
    return HardwareInfo(cpu=cpu_model_name(), cores=os.cpu_count() or 1,
                        threads=threads if threads is not None else torch.get_num_threads(),
                        bf16=cpu_has_bf16(), device=device, gpu=gpu, torch=torch.__version__,
                        ultralytics=_package_version("ultralytics"), python=platform.python_version())


def _run_tool(args: list[str], log_path: Path, what: str) -> str:
    """Run a repository tool with this interpreter; its output goes to ``log_path`` (returned)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, *args]
    logger.info("%s: %s (log: %s)", what, " ".join(command), log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    log_path.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise BenchmarkError(f"{what} failed with exit status {proc.returncode}: {tail[0]} (log: {log_path})")
    return proc.stdout + proc.stderr


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
    amp = settings.amp if settings.amp is not None else ("none" if settings.device == "cpu" else None)
    if amp is not None:
        args += ["--amp", amp]
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
    predictor = Predictor.from_checkpoint(ckpt_path, device=settings.device, batch_size=1)
    if tuple(predictor.classes) != tuple(classes):
        raise BenchmarkError(f"{ckpt_path}: classes {predictor.classes} differ from {tuple(classes)}")
    per_image, ms, result = _predict_and_score(lambda im: predictor.predict_images([im])[0], settings,
                                               images, classes)
    backbone = predictor.cfg.model.backbone
    onnx_ms, onnx_ap07, onnx_note = score_exported(ckpt_path, settings, images, classes)
    return ModelScore(
        model=f"bbavectors {backbone} (w{predictor.cfg.model.head_width})",
        params=_num_parameters(predictor.model), budget_minutes=settings.minutes,
        train_seconds=_train_seconds(run_dir), epochs=_epochs_of(checkpoint), ap07=result.map07,
        ap_area=result.map_area, ms_per_image=ms, onnx_ms_per_image=onnx_ms, onnx_ap07=onnx_ap07,
        onnx_note=onnx_note, input_size=predictor.input_size,
        detections=sum(len(d["scores"]) for _, d in per_image), checkpoint=str(ckpt_path))


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
    _, ms, result = _predict_and_score(lambda im: predictor.predict_images([im])[0], settings, images,
                                       classes)
    return ms, result.map07, None


def _train_seconds(run_dir: Path) -> float | None:
    log = run_dir.parent.parent / "logs" / "train_ours.log"
    if not log.is_file():
        return None
    match = re.search(r"step\(s\) in (\d+(?:\.\d+)?) s", log.read_text(encoding="utf-8", errors="replace"))
    return float(match.group(1)) if match else None


# ------------------------------------------------------------------------------ YOLO
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
    _run_tool(args, settings.work_dir / "logs" / "convert_yolo.log", "converting to YOLO-OBB")
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


def train_and_score_yolo(model_yaml: str, data_yaml: Path, settings: AccuracySettings, input_size: int,
                         batch_size: int, images: dict[str, Path], classes: Sequence[str]) -> ModelScore:
    """Train one YOLO-OBB from its YAML with Ultralytics' time budget, then score its ``last.pt``."""
    _prepare_ultralytics(settings.work_dir)
    # The optional dependency, imported only here (typed Any: mypy runs without it too).
    YOLO: Any = importlib.import_module("ultralytics").YOLO

    # Ultralytics' select_device resets torch to min(8, cores - 1) threads on the CPU (1 on 2 cores):
    # give it the thread count every model gets.
    threads = settings.threads if settings.threads is not None else (os.cpu_count() or 1)
    setattr(importlib.import_module("ultralytics.utils.torch_utils"), "NUM_THREADS", threads)  # noqa: B010
    torch.set_num_threads(threads)
    name = Path(model_yaml).stem
    model: Any = YOLO(model_yaml)
    train_args: dict[str, Any] = dict(
        data=str(data_yaml), imgsz=input_size, batch=batch_size, device=_yolo_device(settings.device),
        workers=settings.workers, project=str(settings.work_dir / "yolo_runs"), name=name, exist_ok=True,
        pretrained=False, amp=False, plots=False, val=False, seed=settings.seed, deterministic=False,
        verbose=False, epochs=settings.max_epochs if settings.max_epochs is not None else 10_000)
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
    trained: Any = YOLO(str(last))
    yolo_names = {int(k): str(v) for k, v in trained.names.items()}
    device = _yolo_device(settings.device)

    def predict(image: NDArray[np.uint8]) -> Detections:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        result: Any = trained.predict(bgr, imgsz=input_size, conf=YOLO_CONF, max_det=YOLO_MAX_DET,
                                      device=device, verbose=False)[0]
        obb = result.obb
        return yolo_obb_to_detections(obb.xyxyxyxy.cpu().numpy(), obb.conf.cpu().numpy(),
                                      obb.cls.cpu().numpy(), yolo_names, classes)

    per_image, ms, result = _predict_and_score(predict, settings, images, classes)
    return ModelScore(
        model=name.replace(".yaml", ""), params=sum(p.numel() for p in trained.model.parameters()),
        budget_minutes=settings.minutes, train_seconds=train_seconds, epochs=epochs, ap07=result.map07,
        ap_area=result.map_area, ms_per_image=ms, input_size=input_size,
        detections=sum(len(d["scores"]) for _, d in per_image), checkpoint=str(last))


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
    ground_truth = load_ground_truth(Path(settings.data) / "labelTxt", list(images))
    val_objects = sum(1 for g in ground_truth.values() for o in g.objects if not o.difficult)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    rows: list[ModelScore] = []
    if settings.run_ours:
        rows.append(score_ours(train_ours(settings), settings, images, classes))
    if settings.run_yolo:
        rows += _yolo_rows(settings, input_size, batch_size, images, classes)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()}
    return AccuracyResult(rows, hardware_info(settings.device, settings.threads), record, len(images),
                          val_objects)


def _yolo_rows(settings: AccuracySettings, input_size: int, batch_size: int, images: dict[str, Path],
               classes: Sequence[str]) -> list[ModelScore]:
    if _package_version("ultralytics") is None:
        reason = "ultralytics is not installed (pip install -e \".[bench]\")"
        return [ModelScore(model=Path(m).stem, skipped=reason) for m in settings.yolo_models]
    data_yaml = convert_for_yolo(settings, classes)
    return [train_and_score_yolo(m, data_yaml, settings, input_size, batch_size, images, classes)
            for m in settings.yolo_models]


def _fmt(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_accuracy_table(result: AccuracyResult) -> str:
    """Markdown table of the rows, then the hardware line."""
    header = ("| model | params (M) | input | budget (min) | trained (min) | epochs | AP07 | AP area "
              "| ms/image | ONNX ms/image |")
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result.rows:
        if r.skipped:
            lines.append(f"| {r.model} | skipped: {r.skipped} |  |  |  |  |  |  |  |  |")
            continue
        lines.append(
            f"| {r.model} | {_fmt(r.params and r.params / 1e6, '.2f')} | {_fmt(r.input_size, 'd')} "
            f"| {_fmt(r.budget_minutes, 'g')} | {_fmt(r.train_seconds and r.train_seconds / 60, '.1f')} "
            f"| {_fmt(r.epochs, '.2f')} | {_fmt(r.ap07, '.4f')} | {_fmt(r.ap_area, '.4f')} "
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


def _num_parameters(model: torch.nn.Module | None) -> int:
    # A checkpoint always gives a PyTorch model here (an ONNX backend has no parameters to count).
    return 0 if model is None else int(sum(p.numel() for p in model.parameters()))
