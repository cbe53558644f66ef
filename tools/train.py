"""Train BBAVectors (CTRBOX) on a DOTA-format data set, or on the built-in synthetic set.

Examples::

    # see the whole system work: synthetic data generated once (datasets/synthetic), a short schedule
    # (configs/synthetic_quick.yaml), mAP table and pictures in runs/<name>/ after a few CPU minutes
    python tools/train.py --backbone resnet18

    # a real data set (DOTA_devkit.split patches in images/ + labelTxt/ + trainval.txt / val.txt)
    python tools/train.py --config configs/dota_resnet18.yaml --data datasets/dota_split --name r18

    # 8 GPUs (lr scales with the global batch, see docs/training.md)
    torchrun --nproc_per_node 8 tools/train.py --config configs/dota_resnet101.yaml --data datasets/dota_split

    # a time budget: measure the speed, train as many steps as fit in 60 minutes, schedule finished
    python tools/train.py --data datasets/dota_split --backbone resnet50 --time 60

    # continue an interrupted run (same folder, same step count and learning-rate curve)
    python tools/train.py --resume runs/r18/last.pt

Flags override the config file, and ``--set section.key=value`` overrides anything else
(``--set train.ema=true --set augment.rotate=0.5``). The resolved config is printed and saved as
``runs/<name>/config.yaml``; the run folder also gets last.pt, best.pt (best validation VOC07 mAP),
metrics.jsonl, tb/ (TensorBoard) and predictions/*.png.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import yaml

from bbavectors.config import ConfigError, config_to_dict
from bbavectors.engine.budget import process_start_time
from bbavectors.engine.distributed import cleanup_distributed
from bbavectors.engine.train_state import CheckpointWriteError, TrainResult
from bbavectors.engine.trainer import AMP_MODES, NonFiniteLossError, Trainer, prepare_run

#: Errors a user can cause (bad values, files, folders, data): one line on stderr, exit code 2.
USER_ERRORS = (ConfigError, FileNotFoundError, FileExistsError, ValueError, CheckpointWriteError)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="YAML config (default: configs/synthetic_quick.yaml when "
                   "--data is absent, else the built-in defaults)")
    p.add_argument("--data", help="data set folder (images/, labelTxt/, split files); default: the built-in "
                   "synthetic set, generated on first use")
    p.add_argument("--backbone", help="trunk: resnet18/34/50/101/152, mobilenet_v2, timm:<name>, ...")
    p.add_argument("--pretrained", help="trunk weights: imagenet (needs network) or a local .pth file")
    p.add_argument("--head-width", type=int, help="channels of the head convolutions")
    p.add_argument("--classes", help="class list: dota1.0 | dota1.5 | dota2.0 | hrsc2016 | synthetic | file "
                   "(default: DATA/classes.txt when it exists, else dota1.0)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="images per step and per process")
    p.add_argument("--input-size", type=int, help="square network input side in pixels")
    p.add_argument("--lr", type=float, help="learning rate for train.base_batch_size images per step")
    p.add_argument("--workers", type=int, help="data loading processes (0 = in the main process)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision (bf16 default; fp16 uses a GradScaler)")
    p.add_argument("--ema", action="store_true", help="keep an EMA of the weights (validated and saved)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--val-every", type=int, help="validate every N epochs (and after the last)")
    p.add_argument("--time", type=float, metavar="MINUTES",
                   help="time budget: measure the speed, then train as many steps as fit in MINUTES (from "
                   "the command's start, validation and checkpoints included) on a schedule that ends "
                   "there (train.time_budget; overrides --epochs)")
    p.add_argument("--train-split", help="training split: a name in --data (trainval -> DATA/trainval.txt) "
                   "or the path of a .txt file anywhere")
    p.add_argument("--val-split", help="validation split: a name in --data or the path of a .txt file")
    p.add_argument("--seed", type=int)
    p.add_argument("--name", help="run folder name under --runs-dir (default: <backbone>_<time> or the "
                   "config's name); an existing folder is never overwritten")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where run folders go (default runs/)")
    p.add_argument("--resume", type=Path,
                   help="continue from this checkpoint (runs/<name>/last.pt), in its folder")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[],
                   metavar="SECTION.KEY=VALUE", help="override any config value (repeatable)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the cores, shared between the "
                   "processes of a node)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The explicit flags as ``section.key=value`` overrides, then the ``--set`` items."""
    mapping = {
        "backbone": "model.backbone", "pretrained": "model.pretrained", "head_width": "model.head_width",
        "classes": "data.classes", "epochs": "train.epochs", "batch_size": "train.batch_size",
        "input_size": "data.input_size", "lr": "train.lr", "workers": "data.workers",
        "device": "train.device", "amp": "train.amp", "val_every": "train.val_every", "seed": "train.seed",
        "time": "train.time_budget", "train_split": "data.train_split", "val_split": "data.val_split",
    }
    items = [f"{key}={getattr(args, flag)}" for flag, key in mapping.items()
             if getattr(args, flag) is not None]
    if args.ema:
        items.append("train.ema=true")
    if args.compile:
        items.append("train.compile=true")
    return items + [item for group in args.overrides for item in group]


def _error(error: BaseException) -> int:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    print(f"error: {text.splitlines()[0] if text else type(error).__name__}", file=sys.stderr)
    return 2


def print_summary(result: TrainResult, run_dir: Path) -> None:
    """The AP table, best mAP, and one line: epochs, steps, time (and budget), skipped steps and labels."""
    if result.last_validation is not None:
        print(result.last_validation.task1.format_table())
        print(f"best VOC07 mAP {result.best_map07:.4f} (epoch {result.best_epoch})")
    line = f"{result.epochs} epoch(s), {result.steps} step(s) in {result.seconds:.0f} s"
    if result.budget is not None:
        b = result.budget
        line += (f" (time budget {b['budget_s']:.0f} s: {b['used_s']:.0f} s used, {b['total_steps']} steps "
                 f"planned)")
    line += f"; non-finite steps skipped: {result.nonfinite_skipped}"
    if result.replaced_samples > 0:
        line += f"; WARNING {result.replaced_samples} training sample(s) replaced (unreadable images)"
    if result.skipped_label_share > 0:
        line += f"; WARNING {100 * result.skipped_label_share:.0f}% of the label lines skipped"
    print(line + f"; run folder: {run_dir}")


def main(argv: list[str] | None = None, started: float | None = None) -> int:
    """Run the command; ``started`` (``time.time()``) starts the time budget's clock (default: now;
    the process's start when run as a script, so imports and data generation count)."""
    started = time.time() if started is None else started
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run = prepare_run(args.config, flag_overrides(args), args.data, args.runs_dir, args.name, args.resume)
    except USER_ERRORS as e:
        return _error(e)
    if not run.dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    else:
        print(yaml.safe_dump(config_to_dict(run.cfg), sort_keys=False), end="")
        print(f"run folder: {run.run_dir}")
    try:
        trainer = Trainer(run.cfg, run.run_dir, resume=run.resume_path, dist_info=run.dist,
                          progress=not args.quiet, threads=args.threads, device=run.device,
                          resume_state=run.resume_state, budget_start=started)
        result = trainer.fit()
    except USER_ERRORS as e:
        return _error(e)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        cleanup_distributed()
    if run.dist.is_main:
        print_summary(result, run.run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(started=process_start_time()))
