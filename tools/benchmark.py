"""Speed measurements, each against a baseline measured in the same run (docs/training.md, docs/targets.md,
docs/inference.md).

Subcommands::

    # training: model-only step vs the full loop (PNG files -> loader -> device targets), per trunk
    python tools/benchmark.py train --backbones resnet18 resnet101 --batch-size 16 --workers 8
    python tools/benchmark.py train --device cpu --input-size 128 --batch-size 2 --steps 3   # smoke test

    # target encoding on one CPU core vs the original's per-object loop
    python tools/benchmark.py targets --objects 50 200

    # inference: patches/s and one whole scene vs the original pipeline
    python tools/benchmark.py infer --backbone resnet18

    # inference on the CPU: PyTorch eager vs ONNX Runtime, resnet18 and mobilenet_v2, a 4000 px scene
    python tools/benchmark.py infer --onnx

``python tools/benchmark.py <subcommand> --help`` lists each one's options. ``--json FILE`` also
writes the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any


def _write_json(path: Path | None, results: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- train
def _add_train(sub: Any) -> None:
    from bbavectors.benchmarks.train import TrainBenchmarkSettings

    d = TrainBenchmarkSettings()
    p = sub.add_parser("train", help="training speed: model-only step vs the full loop with real PNG files")
    p.add_argument("--backbones", nargs="+", default=d.backbones)
    p.add_argument("--head-width", type=int, default=d.head_width)
    p.add_argument("--input-size", type=int, default=d.input_size)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--workers", type=int, default=d.workers, help="loader worker processes")
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
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default=d.amp)
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
            threads=args.threads)
        results = infer.run_benchmark(s)
        print(infer.format_table(results))
    _write_json(args.json, results)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_targets(sub)
    _add_infer(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
