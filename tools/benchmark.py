"""Speed measurements, each against a baseline measured in the same run (docs/training.md, docs/targets.md,
docs/inference.md).

Subcommands::

    # training: model-only step vs the full loop (PNG files -> loader -> device targets), per trunk
    python tools/benchmark.py train --backbones resnet18 resnet101 --batch-size 16
    python tools/benchmark.py train --device cpu --input-size 128 --batch-size 2 --steps 3   # smoke test

    # target encoding on one CPU core vs the original's per-object loop
    python tools/benchmark.py targets --objects 50 200

    # inference: patches/s and one whole scene vs the original pipeline
    python tools/benchmark.py infer --backbone resnet18

    # inference on the CPU: PyTorch eager vs ONNX Runtime, resnet18 and mobilenet_v2, a 4000 px scene
    python tools/benchmark.py infer --onnx

    # real data: our recipe vs YOLOv8n-OBB / YOLO11n-OBB, 45 min each (pip install -e ".[bench]")
    python tools/benchmark.py accuracy --data DATA --train-split splits/trainval.txt \\
        --val-split splits/val.txt --work-dir bench_ssdd --minutes 45 --threads 2

``python tools/benchmark.py <subcommand> --help`` lists each one's options. ``--json FILE`` also
writes the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from bbavectors.inference.tta import TTA_MODES
from bbavectors.runtime import INFERENCE_AMP_MODES
from DOTA_devkit.atomic import atomic_write_text


def _write_json(path: Path | None, results: dict[str, Any]) -> None:
    if path is None:
        return
    atomic_write_text(path, json.dumps(results, indent=2, default=str))


# ------------------------------------------------------------------------------------------- train
def _add_train(sub: Any) -> None:
    from bbavectors.benchmarks.train import TrainBenchmarkSettings

    d = TrainBenchmarkSettings()
    p = sub.add_parser("train", help="training speed: model-only step vs the full loop with real PNG files")
    p.add_argument("--backbones", nargs="+", default=d.backbones)
    p.add_argument("--head-width", type=int, default=d.head_width)
    p.add_argument("--input-size", type=int, default=d.input_size)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--workers", type=int, default=d.workers,
                   help="loader worker processes (default: the usable cores, at most 8)")
    p.add_argument("--steps", type=int, default=d.steps, help="steps per timed window")
    p.add_argument("--windows", type=int, default=d.windows, help="timed windows (the median is reported)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed steps first")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", choices=("bf16", "fp16", "none"), default=d.amp)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last,
                   help="channels_last memory format (CUDA only)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--num-images", type=int, default=d.num_images, help="PNG patches to generate")
    p.add_argument("--data-dir", help="where the generated patches are cached (default: temp folder)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from bbavectors.benchmarks.train import TrainBenchmarkSettings, format_table, run_train_benchmark

    s = TrainBenchmarkSettings(
        backbones=list(args.backbones), head_width=args.head_width, input_size=args.input_size,
        batch_size=args.batch_size, workers=args.workers, steps=args.steps, windows=args.windows,
        warmup=args.warmup, device=args.device, amp=args.amp, channels_last=args.channels_last,
        compile=args.compile, num_images=args.num_images, data_dir=args.data_dir)
    results = run_train_benchmark(s)
    print(format_table(results))
    _write_json(args.json, results)
    return 0


# ----------------------------------------------------------------------------------------- targets
def _add_targets(sub: Any) -> None:
    p = sub.add_parser("targets", help="target encoding speed vs the original's loop, cls_theta tables")
    p.add_argument("--objects", type=int, nargs="+", default=[50, 200])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--data", type=Path, default=None,
                   help="folder with dota_examples / dota_demo / ssdd_rbox_train (real labels)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(func=_run_targets)


def _run_targets(args: argparse.Namespace) -> int:
    from bbavectors.benchmarks.targets import format_table, run_targets_benchmark

    results = run_targets_benchmark(args.objects, args.repeats, args.batch, args.data)
    print(format_table(results))
    _write_json(args.json, results)
    return 0


# ------------------------------------------------------------------------------------------- infer
def _add_infer(sub: Any) -> None:
    from bbavectors.benchmarks.infer import InferBenchmarkSettings, OnnxBenchmarkSettings

    d, o = InferBenchmarkSettings(), OnnxBenchmarkSettings()
    p = sub.add_parser("infer", help="inference speed: patches/s and one scene vs the original pipeline; "
                       "--onnx: PyTorch eager vs ONNX Runtime on the CPU")
    p.add_argument("--onnx", action="store_true",
                   help="PyTorch eager vs ONNX Runtime, fp32, batch 1, CPU, per --backbones, and one scene")
    p.add_argument("--checkpoint", help="use this checkpoint's model instead of random weights")
    p.add_argument("--backbone", default=d.backbone)
    p.add_argument("--backbones", nargs="+", default=list(o.backbones), help="--onnx: trunks to compare")
    p.add_argument("--head-width", type=int, default=d.head_width)
    p.add_argument("--input-size", type=int, default=d.input_size)
    p.add_argument("--device", default=d.device)
    p.add_argument("--amp", choices=INFERENCE_AMP_MODES, default=d.amp)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last,
                   help="the predictor's memory format (default: channels-last)")
    p.add_argument("--fuse-batch-norm", action=argparse.BooleanOptionalAction, default=d.fuse_batch_norm,
                   help="fold batch norms into the convolutions (default on)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--iters", type=int, default=None,
                   help=f"timed iterations per patch measurement (default {d.patch_iters}; --onnx {o.iters})")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--scene-size", type=int, default=d.scene_size)
    p.add_argument("--subsize", type=int, default=d.subsize)
    p.add_argument("--gap", type=int, default=d.gap)
    p.add_argument("--repeats", type=int, default=d.scene_repeats, help="scene runs per pipeline (0: none)")
    p.add_argument("--score-thresh", type=float,
                   help="score threshold (default: the checkpoint's; 0 for random weights)")
    p.add_argument("--detections-per-window", type=int, default=d.detections_per_window,
                   help="random weights: decode top-K per window")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's; --onnx: the usable cores)")
    p.add_argument("--optimization", nargs="+", default=list(o.optimization_levels),
                   choices=("all", "extended", "basic", "none"), help="--onnx: graph optimisation levels")
    p.add_argument("--no-decoder-outside", action="store_true",
                   help="--onnx: skip the variant with the decoder outside the graph")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(func=_run_infer)


def _run_infer(args: argparse.Namespace) -> int:
    from bbavectors.benchmarks import infer

    if args.onnx:
        o = infer.OnnxBenchmarkSettings(
            backbones=tuple(args.backbones), head_width=args.head_width, input_size=args.input_size,
            iters=args.iters or infer.OnnxBenchmarkSettings.iters,
            warmup=args.warmup if args.warmup is not None else infer.OnnxBenchmarkSettings.warmup,
            scene_size=args.scene_size, subsize=args.subsize, gap=args.gap, scene_repeats=args.repeats,
            threads=args.threads, optimization_levels=tuple(args.optimization),
            decoder_outside=not args.no_decoder_outside, detections_per_window=args.detections_per_window)
        results = infer.run_onnx_benchmark(o)
        print(infer.format_onnx_table(results))
    else:
        s = infer.InferBenchmarkSettings(
            backbone=args.backbone, head_width=args.head_width, input_size=args.input_size,
            checkpoint=args.checkpoint, device=args.device, amp=args.amp, batch_size=args.batch_size,
            patch_iters=args.iters or infer.InferBenchmarkSettings.patch_iters,
            warmup=args.warmup if args.warmup is not None else infer.InferBenchmarkSettings.warmup,
            scene_size=args.scene_size, subsize=args.subsize, gap=args.gap,
            scene_repeats=max(1, args.repeats),
            score_thresh=args.score_thresh, detections_per_window=args.detections_per_window,
            threads=args.threads, channels_last=args.channels_last, fuse_batch_norm=args.fuse_batch_norm)
        results = infer.run_benchmark(s)
        print(infer.format_table(results))
    _write_json(args.json, results)
    return 0


# ---------------------------------------------------------------------------------------- accuracy
def _add_accuracy(sub: Any) -> None:
    from bbavectors.benchmarks.accuracy import DEFAULT_YOLO_MODELS

    p = sub.add_parser("accuracy", help="accuracy on real data: our recipe vs YOLO-OBB, same split, "
                       "budget and evaluator (docs/benchmarks.md)")
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
    p.add_argument("--yolo-optimizer", default="auto",
                   help="Ultralytics' optimizer for the YOLO runs (default auto; under a time budget auto "
                        "takes MuSGD, slow on a CPU without native bf16: AdamW with --yolo-lr0 0.002 is "
                        "auto's choice for runs under 10,000 iterations)")
    p.add_argument("--yolo-lr0", type=float, help="Ultralytics' lr0 with a named --yolo-optimizer")
    p.add_argument("--warmup", type=int, default=5, help="untimed predictions before timing (default 5)")
    p.add_argument("--timed-images", type=int, help="time only the first N validation images")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"),
                   help="our mixed precision (default: the recipe's; bf16 falls back to float32 on a CPU "
                        "without native bf16)")
    p.add_argument("--inference-amp", choices=INFERENCE_AMP_MODES, default="auto",
                   help="our precision when timed and scored (default auto: bf16 where the CPU computes it "
                        "natively, else float32, as tools/test.py)")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="our test-time augmentation when timed and scored (tools/test.py --tta; default "
                        "none)")
    p.add_argument("--score-only", action="store_true",
                   help="train nothing: time and score the checkpoints an earlier run left in --work-dir "
                        "(written to WORK_DIR/accuracy_rescored.json unless --json)")
    p.add_argument("--validate-in-training", action="store_true",
                   help="let our run validate while it trains (inside its budget; default off, as YOLO)")
    p.add_argument("--no-onnx", action="store_true",
                   help="skip exporting our model and timing it in onnxruntime (default: done on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="override our recipe: one or more items, the flag repeatable (as tools/train.py)")
    p.add_argument("--json", type=Path, help="write the result here (default WORK_DIR/accuracy.json)")
    p.set_defaults(func=_run_accuracy)


def _accuracy_settings(args: argparse.Namespace) -> Any:
    from bbavectors.benchmarks.accuracy import AccuracySettings

    settings = AccuracySettings(
        data=args.data, train_split=args.train_split, val_split=args.val_split, work_dir=args.work_dir,
        minutes=args.minutes if args.minutes > 0 else None, max_epochs=args.max_epochs, device=args.device,
        threads=args.threads, workers=args.workers, input_size=args.input_size, batch_size=args.batch_size,
        yolo_models=tuple(args.yolo_models), run_ours=not args.skip_ours, run_yolo=bool(args.yolo_models),
        yolo_optimizer=args.yolo_optimizer, yolo_lr0=args.yolo_lr0,
        warmup_images=args.warmup, timed_images=args.timed_images, seed=args.seed, amp=args.amp,
        inference_amp=args.inference_amp, tta=args.tta, score_only=args.score_only,
        validate_in_training=args.validate_in_training, onnx=not args.no_onnx,
        overrides=tuple(item for group in args.overrides for item in group))
    if args.config is not None:
        settings.config = args.config
    return settings


def _run_accuracy(args: argparse.Namespace) -> int:
    import sys

    from bbavectors.benchmarks.accuracy import BenchmarkError, format_accuracy_table, run_accuracy_benchmark
    from bbavectors.checkpoint import CheckpointLoadError

    logging.getLogger().setLevel(logging.INFO)
    try:
        result = run_accuracy_benchmark(_accuracy_settings(args))
    except (BenchmarkError, CheckpointLoadError, FileNotFoundError, ValueError) as e:
        print(f"benchmark.py accuracy: error: {e}", file=sys.stderr)
        return 2
    default_name = "accuracy_rescored.json" if args.score_only else "accuracy.json"
    json_path = args.json or args.work_dir / default_name
    json_path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(json_path, result.to_dict())
    print(format_accuracy_table(result))
    print(f"written to {json_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_targets(sub)
    _add_infer(sub)
    _add_accuracy(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
