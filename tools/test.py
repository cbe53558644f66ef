"""Test a checkpoint: patches, a split file or whole scenes -> DOTA Task1 files (+ pictures, zip, mAP).

Examples::

    # a folder of patches (e.g. DOTA_devkit.split output); patch names <id>__<rate>__<left>___<up>
    # also give scene-level results in OUT/merged/
    python tools/test.py --checkpoint runs/r18/best.pt --images data/val_split/images --out results/val \\
        --eval data/val_split/labelTxt

    # whole scenes of any size, windows cut on the fly (no patch files), for the DOTA server
    python tools/test.py --checkpoint runs/r18/best.pt --images DOTA/test/images --out results/test \\
        --scenes --subsize 608 --gap 100 --rates 0.5 1.0 --zip

    # the same job on the CPU through ONNX Runtime (a file written by tools/export_onnx.py)
    python tools/test.py --onnx model.onnx --images data/val_split/images --out results/val_onnx \\
        --eval data/val_split/labelTxt

Outputs: OUT/Task1_<class>.txt, OUT/merged/ (patch names), OUT/pictures/ (--pictures),
OUT/task1.zip (--zip), OUT/eval.json (--eval). See docs/inference.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bbavectors.checkpoint import CheckpointLoadError
from bbavectors.inference.errors import one_line
from bbavectors.inference.predictor import Predictor
from bbavectors.inference.runner import InferenceInputError, InferenceOptions, run_inference
from bbavectors.inference.scenes import DOTA_MERGE_NMS_THRESH, SceneSettings
from bbavectors.inference.tta import TTA_MODES
from bbavectors.runtime import INFERENCE_AMP_MODES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help="bbavectors checkpoint (.pt)")
    model.add_argument("--onnx", type=Path,
                       help="exported model (tools/export_onnx.py): run it with ONNX Runtime on the CPU")
    p.add_argument("--images", required=True, type=Path, help="folder of images (patches or scenes)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--scenes", action="store_true",
                   help="images are whole scenes: cut windows on the fly and merge")
    p.add_argument("--split", type=Path, help="split file: run only these image ids")
    p.add_argument("--eval", dest="eval_labels", type=Path, metavar="LABEL_DIR",
                   help="labelTxt folder: compute DOTA Task1 mAP, print it, write OUT/eval.json")
    p.add_argument("--zip", action="store_true", help="write OUT/task1.zip for the DOTA server")
    p.add_argument("--pictures", action="store_true", help="draw detections into OUT/pictures/*.png")
    p.add_argument("--batch-size", type=int,
                   help="images (or scene windows) per model call (default: 16 on GPU, 1 on CPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--subsize", type=int, default=608, help="--scenes: window side in pixels")
    p.add_argument("--gap", type=int, default=100, help="--scenes: overlap of windows in pixels")
    p.add_argument("--rates", type=float, nargs="+", default=[1.0], help="--scenes: scene scale factors")
    p.add_argument("--score-thresh", type=float, help="score threshold (default: the checkpoint's)")
    p.add_argument("--nms-thresh", type=float, default=DOTA_MERGE_NMS_THRESH,
                   help="per-class rotated NMS IoU when merging windows / patches (default 0.1)")
    p.add_argument("--rectangles", action=argparse.BooleanOptionalAction, default=None,
                   help="--checkpoint: decode rotated boxes as rectangles (--no-rectangles: the raw "
                        "parallelograms); default: the checkpoint's decode.rectangles")
    p.add_argument("--centre-shift", type=float, nargs=2, metavar=("DX", "DY"),
                   help="--checkpoint: (dx, dy) input pixels added to every decoded centre; default: the "
                        "checkpoint's decode.centre_shift (the training's centre calibration; 0 0 turns it "
                        "off)")
    p.add_argument("--amp", choices=INFERENCE_AMP_MODES, default="auto",
                   help="autocast for --checkpoint: auto (default: bf16 where the CPU / GPU computes it "
                        "natively, else float32), bf16, fp16 (GPU) or none (float32)")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="--checkpoint: test-time augmentation: flips (4 views) or dihedral (8: flips and "
                        "quarter turns), averaged on the output grid before the decode; that many times "
                        "the model's time (default none)")
    p.add_argument("--threads", type=int, help="--onnx: intra-op threads (default: the usable cores)")
    p.add_argument("--workers", type=int, default=2, help="image decoding workers (0 = main process)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def load_predictor(args: argparse.Namespace) -> Predictor:
    if args.onnx is not None:
        if args.amp not in ("none", "auto"):
            raise ValueError("--amp applies to --checkpoint; an ONNX model runs in float32")
        if args.device not in ("auto", "cpu"):
            raise ValueError(f"--onnx runs on the CPU (got --device {args.device})")
        if args.rectangles is not None:
            raise ValueError("--rectangles applies to --checkpoint; an exported graph decodes as it was "
                             "exported (tools/export_onnx.py --rectangles)")
        if args.centre_shift is not None:
            raise ValueError("--centre-shift applies to --checkpoint; an exported graph decodes with the "
                             "shift it was exported with")
        if args.tta != "none":
            raise ValueError("--tta applies to --checkpoint; an exported graph runs its input as it is")
        return Predictor.from_onnx(args.onnx, batch_size=args.batch_size, score_thresh=args.score_thresh,
                                   threads=args.threads)
    return Predictor.from_checkpoint(args.checkpoint, device=args.device, batch_size=args.batch_size,
                                     amp=args.amp, score_thresh=args.score_thresh,
                                     rectangles=args.rectangles,
                                     centre_shift=None if args.centre_shift is None
                                     else (args.centre_shift[0], args.centre_shift[1]), tta=args.tta)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        scene = SceneSettings(subsize=args.subsize, gap=args.gap, rates=tuple(args.rates),
                              nms_thresh=args.nms_thresh)
        if args.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {args.workers}")
        if not 0 < args.nms_thresh <= 1:
            raise ValueError(f"--nms-thresh must be in (0, 1], got {args.nms_thresh}")
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} is a file, not a folder")
        predictor = load_predictor(args)
        options = InferenceOptions(
            images=args.images, out=args.out, scenes=args.scenes, split=args.split,
            eval_labels=args.eval_labels, zip=args.zip, pictures=args.pictures, workers=args.workers,
            scene=scene, merge_nms_thresh=args.nms_thresh, progress=not args.quiet)
        summary = run_inference(predictor, options)
    except (OSError, CheckpointLoadError, InferenceInputError, ValueError) as e:
        print(f"test.py: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"{summary.num_images} image(s), {summary.num_detections} detection(s) in {summary.seconds:.1f} s; "
          f"Task1 files in {summary.task1_dir}")
    if summary.num_unreadable:
        print(f"skipped {summary.num_unreadable} unreadable image(s): {', '.join(summary.unreadable[:10])}")
    if summary.merged_dir is not None:
        print(f"scene-level (merged) Task1 files in {summary.merged_dir}")
    if summary.pictures_dir is not None:
        print(f"pictures in {summary.pictures_dir}")
    if summary.zip_path is not None:
        print(f"zip for the DOTA server: {summary.zip_path}")
    if summary.eval_result is not None:
        print(f"DOTA Task1 evaluation ({summary.eval_level} level), written to {summary.eval_json}:")
        print(summary.eval_result.format_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
