"""Training engine: run set-up (:mod:`.run_setup`), start-up data checks (:mod:`.data_checks`), the loop
(:mod:`.trainer`) and its state (:mod:`.train_state`), non-finite steps (:mod:`.nonfinite`), the time
budget (:mod:`.budget`, :mod:`.budget_run`), optimiser and schedule (:mod:`.optim`), weight EMA
(:mod:`.ema`), torchrun / DDP helpers (:mod:`.distributed`), metrics (:mod:`.metrics_log`), validation
with DOTA Task1 mAP (:mod:`.validate`) and prediction pictures (:mod:`.draw`). See docs/training.md."""

from .budget import BudgetPlan, plan_time_budget
from .distributed import DistInfo, read_dist_env
from .ema import ModelEMA
from .nonfinite import NonFiniteGuard, NonFiniteLossError
from .optim import WarmupSchedule, build_optimizer, build_scheduler, effective_lr
from .run_setup import PreparedRun, RunSetupError, build_train_config, create_run_dir, prepare_run
from .train_state import CheckpointWriteError, TrainResult
from .trainer import Trainer
from .validate import ValidationResult, run_validation

__all__ = [
    "DistInfo",
    "read_dist_env",
    "ModelEMA",
    "WarmupSchedule",
    "build_optimizer",
    "build_scheduler",
    "effective_lr",
    "BudgetPlan",
    "plan_time_budget",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "RunSetupError",
    "CheckpointWriteError",
    "PreparedRun",
    "Trainer",
    "TrainResult",
    "build_train_config",
    "create_run_dir",
    "prepare_run",
    "ValidationResult",
    "run_validation",
]
