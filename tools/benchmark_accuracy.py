"""Accuracy benchmark: our recipe vs Ultralytics YOLOv8n-OBB / YOLO11n-OBB on the same data and budget.

Each model trains on --train-split for --minutes of wall clock, then predicts every --val-split image
at batch 1; all are scored by DOTA_devkit's Task1 evaluation (VOC07 AP, polygon IoU 0.5) and timed
(median ms per image). Prints a table and writes --json. Needs ``pip install -e ".[bench]"`` for
the YOLO rows (skipped with the reason otherwise). See docs/benchmarks.md.

Examples::

    # the full comparison on a 2-core CPU (45 minutes of training per model)
    python tools/benchmark_accuracy.py --data DATA --train-split splits/train.txt \\
        --val-split splits/val.txt --work-dir bench_ssdd --minutes 45 --threads 2

    # on a GPU
    python tools/benchmark_accuracy.py --data DATA --train-split splits/train.txt \\
        --val-split splits/val.txt --work-dir bench_gpu --minutes 45 --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from bbavectors.benchmarks.accuracy import (
    DEFAULT_YOLO_MODELS,
    AccuracySettings,
    BenchmarkError,
    format_accuracy_table,
    run_accuracy_benchmark,
)
from bbavectors.checkpoint import CheckpointLoadError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options (shaped so that ``tools/benchmark.py accuracy`` can reuse them as they are)."""
    p.add_argument("--data", required=True, type=Path, help="DOTA-format folder (images/, labelTxt/)")
    p.add_argument("--train-split", required=True, type=Path, help="split file of the training images")
    p.add_argument("--val-split", required=True, type=Path, help="split file of the held-out images")
    p.add_argument("--work-dir", required=True, type=Path,
                   help="where runs, the YOLO copy of the data and logs go (outside the data folder)")
    p.add_argument("--config", type=Path, help="our recipe (default configs/ssdd_resnet18.yaml)")
    p.add_argument("--minutes", type=float, default=45.0,
                   help="training budget per model (default 45; 0: none, then --max-epochs)")
    p.add_argument("--max-epochs", type=int, help="also stop each model after this many epochs")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads for every model (default: all cores)")
    p.add_argument("--workers", type=int, default=2, help="data loading processes per model (default 2)")
    p.add_argument("--input-size", type=int, help="input side for every model (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="batch for every model (default: the recipe's)")
    p.add_argument("--yolo-models", nargs="*", default=list(DEFAULT_YOLO_MODELS),
                   help="Ultralytics model YAMLs (default: %(default)s); none: only ours")
    p.add_argument("--skip-ours", action="store_true", help="only the YOLO models")
    p.add_argument("--warmup", type=int, default=5, help="untimed predictions before timing (default 5)")
    p.add_argument("--timed-images", type=int, help="time only the first N validation images")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"),
                   help="our mixed precision (default: none on the CPU, the recipe's on a GPU)")
    p.add_argument("--validate-in-training", action="store_true",
                   help="let our run validate while it trains (inside its budget; default off, as YOLO)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override our recipe (repeatable)")
    p.add_argument("--json", type=Path, help="write the result here (default WORK_DIR/accuracy.json)")


def write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def settings_from_args(args: argparse.Namespace) -> AccuracySettings:
    settings = AccuracySettings(
        data=args.data, train_split=args.train_split, val_split=args.val_split, work_dir=args.work_dir,
        minutes=args.minutes if args.minutes > 0 else None, max_epochs=args.max_epochs, device=args.device,
        threads=args.threads, workers=args.workers, input_size=args.input_size, batch_size=args.batch_size,
        yolo_models=tuple(args.yolo_models), run_ours=not args.skip_ours, run_yolo=bool(args.yolo_models),
        warmup_images=args.warmup, timed_images=args.timed_images, seed=args.seed, amp=args.amp,
        validate_in_training=args.validate_in_training,
        overrides=tuple(args.overrides))
    if args.config is not None:
        settings.config = args.config
    return settings


def run(args: argparse.Namespace) -> int:
    """Run, print the table, write the JSON; exit status 2 with one line for a user's error."""
    settings = settings_from_args(args)
    try:
        result = run_accuracy_benchmark(settings)
    except (BenchmarkError, CheckpointLoadError, FileNotFoundError, ValueError) as e:
        print(f"benchmark_accuracy.py: error: {e}", file=sys.stderr)
        return 2
    json_path = args.json or args.work_dir / "accuracy.json"
    write_json_atomic(json_path, result.to_dict())
    print(format_accuracy_table(result))
    print(f"written to {json_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
