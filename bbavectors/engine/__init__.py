"""Training engine: the loop (:mod:`.trainer`), optimiser and schedule (:mod:`.optim`), weight EMA
(:mod:`.ema`), torchrun / DDP helpers (:mod:`.distributed`), metrics (:mod:`.metrics_log`), validation
with DOTA Task1 mAP (:mod:`.validate`) and prediction pictures (:mod:`.draw`). See docs/training.md."""

from .distributed import DistInfo, read_dist_env
from .ema import ModelEMA
from .optim import WarmupSchedule, build_optimizer, build_scheduler, effective_lr
from .trainer import (
    NonFiniteLossError,
    PreparedRun,
    Trainer,
    TrainResult,
    build_train_config,
    create_run_dir,
    prepare_run,
)
from .validate import ValidationResult, run_validation

__all__ = [
    "DistInfo",
    "read_dist_env",
    "ModelEMA",
    "WarmupSchedule",
    "build_optimizer",
    "build_scheduler",
    "effective_lr",
    "NonFiniteLossError",
    "PreparedRun",
    "Trainer",
    "TrainResult",
    "build_train_config",
    "create_run_dir",
    "prepare_run",
    "ValidationResult",
    "run_validation",
]
