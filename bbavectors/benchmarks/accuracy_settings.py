"""The accuracy benchmark's inputs and outputs (:mod:`bbavectors.benchmarks.accuracy`): its settings,
one table row per model, the hardware line, and the helpers every stage shares (running a repository
tool, a package's version)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..inference.tta import TTA_MODES

__all__ = [
    "DEFAULT_YOLO_MODELS",
    "REPO_ROOT",
    "AccuracySettings",
    "ModelScore",
    "HardwareInfo",
    "AccuracyResult",
    "BenchmarkError",
    "run_tool",
    "package_version",
]

logger = logging.getLogger(__name__)

#: The peer models, built from Ultralytics' model YAML (random initialisation).
DEFAULT_YOLO_MODELS: tuple[str, ...] = ("yolov8n-obb.yaml", "yolo11n-obb.yaml")
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
    #: Ultralytics' ``optimizer`` for the YOLO runs: ``auto`` (its default) or one of its names
    #: (``AdamW``, ``SGD``, ``MuSGD``, ...). Under a time budget the run is started with 10,000 epochs,
    #: so ``auto`` takes its long-run choice, MuSGD, whose Newton-Schulz step runs in bf16: on a CPU
    #: without native bf16 that step costs most of each iteration (:func:`yolo_optimizer_warning`).
    yolo_optimizer: str = "auto"
    #: Ultralytics' ``lr0`` with a named optimizer (None: Ultralytics' default, 0.01; ``auto`` sets
    #: its own). ``AdamW`` with ``0.002`` is what ``auto`` picks for runs under 10,000 iterations with
    #: one class (``0.002 * 5 / (4 + classes)``).
    yolo_lr0: float | None = None
    warmup_images: int = 5
    timed_images: int | None = None
    seed: int = 0
    #: Our run's mixed precision; None: the recipe's (its bf16 falls back to float32 on a CPU without
    #: native bf16; measured 2-2.5x faster than float32 on 2-core CPUs with AVX512-BF16 or AMX,
    #: docs/benchmarks.md). Ultralytics always runs with amp=False (offline, no CPU AMP).
    amp: str | None = None
    #: Our model's precision when it is timed and scored (:data:`bbavectors.runtime.INFERENCE_AMP_MODES`;
    #: ``auto``, tools/test.py's default: bf16 where the CPU computes it natively, else float32).
    inference_amp: str = "auto"
    #: Our model's test-time augmentation when it is timed and scored
    #: (:data:`bbavectors.inference.tta.TTA_MODES`; YOLO-OBB has none: Ultralytics' ``augment=True``
    #: falls back to one view for its OBB head).
    tta: str = "none"
    #: Let our run validate on the validation split while it trains (inside its budget). Off: the
    #: whole budget trains, as for YOLO (``val=False``); the scoring below is the same either way.
    validate_in_training: bool = False
    #: Also export our model to ONNX and time and score it in onnxruntime (CPU runs only).
    onnx: bool = True
    #: Extra ``section.key=value`` overrides for our run (``--set``).
    overrides: tuple[str, ...] = ()
    #: Train nothing: time and score the checkpoints an earlier run left in ``work_dir``
    #: (``runs/ours/last.pt``, ``yolo_runs/<model>/weights/last.pt``), e.g. after an inference change
    #: or on another machine.
    score_only: bool = False

    @property
    def label_dir(self) -> Path:
        """The data set's DOTA labels, which score every model."""
        return Path(self.data) / "labelTxt"

    def check(self) -> None:
        """Raise ValueError / FileNotFoundError naming the bad setting."""
        if self.minutes is None and self.max_epochs is None:
            raise ValueError("give a time budget (minutes) or max_epochs")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")
        if self.max_epochs is not None and self.max_epochs <= 0:
            raise ValueError(f"max_epochs must be positive, got {self.max_epochs}")
        if self.tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {TTA_MODES}, got {self.tta!r}")
        for name in ("data", "train_split", "val_split", "config"):
            path = Path(getattr(self, name))
            if not path.exists():
                raise FileNotFoundError(f"{name} not found: {path}")
        if not self.label_dir.is_dir():
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
    #: Final recall (mean over classes with ground truth): at 0.9 or more VOC07's AP gains its 0.9
    #: level, so two runs either side of 0.9 differ by up to 1/11 AP07 for a few objects.
    recall: float | None = None
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

def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_tool(args: list[str], log_path: Path, what: str) -> str:
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
