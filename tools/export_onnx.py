"""Export a checkpoint to ONNX (decoder inside), then check it with onnxruntime against PyTorch.

Examples::

    python tools/export_onnx.py --checkpoint runs/x/best.pt --out model.onnx
    python tools/export_onnx.py --checkpoint runs/x/best.pt --out model.onnx --input-size 608 \\
        --top-k 100 --nms --check datasets/dota/images/P0001.png

The check runs random inputs (and each ``--check`` image) through PyTorch and onnxruntime and
prints the largest box / score differences; the exit status is 1 when they disagree.
See docs/deployment.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bbavectors.checkpoint import CheckpointLoadError, model_from_checkpoint
from bbavectors.data.image_io import read_image
from bbavectors.export.check import check_export
from bbavectors.export.onnx_export import export_checkpoint
from bbavectors.inference.errors import one_line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--input-size", type=int, default=None,
                   help="letterbox side and example input (default: the checkpoint's data.input_size)")
    p.add_argument("--top-k", type=int, default=100, help="detections per image in the graph (default 100)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    p.add_argument("--nms", action="store_true",
                   help="put the exact per-class rotated NMS in the graph (default: the runner does it)")
    p.add_argument("--rectangles", action=argparse.BooleanOptionalAction, default=None,
                   help="decode rotated boxes as rectangles in the graph (--no-rectangles: the raw "
                        "parallelograms); default: the checkpoint's decode.rectangles")
    p.add_argument("--static", action="store_true", help="fixed input shape (1, 3, S, S) instead of dynamic")
    p.add_argument("--float-input", action="store_true",
                   help="input float32 already normalised (default: uint8 RGB, normalised in the graph)")
    p.add_argument("--torchscript", action="store_true",
                   help="legacy TorchScript exporter (only the batch is dynamic) instead of dynamo")
    p.add_argument("--check", nargs="*", default=[], metavar="IMAGE", help="real images to check on")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch check")
    p.add_argument("--box-tol", type=float, default=0.05, help="largest accepted box difference (px)")
    p.add_argument("--score-tol", type=float, default=1e-3, help="largest accepted score difference")
    args = p.parse_args(argv)
    if args.opset < 17:
        p.error("--opset must be >= 17")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    try:
        # Every input is checked before the export, which takes tens of seconds.
        model, _, _ = model_from_checkpoint(args.checkpoint, "cpu")
        images = [] if args.no_check else [read_image(path) for path in args.check]
        out = Path(args.out)
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder, not a file")
        out.parent.mkdir(parents=True, exist_ok=True)
        out = export_checkpoint(args.checkpoint, out, input_size=args.input_size, top_k=args.top_k,
                                opset=args.opset, with_nms=args.nms, dynamic=not args.static,
                                dynamo=not args.torchscript, normalize_inside=not args.float_input,
                                rectangles=args.rectangles)
    except (OSError, CheckpointLoadError, ValueError) as e:  # ImageReadError is an OSError
        print(f"export_onnx.py: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    if args.no_check:
        return 0
    results = check_export(model, out, images, list(args.check), num_random=1 if args.static else 2)
    for r in results:
        print(r.format())
    bad = [r for r in results if not r.ok(args.box_tol, args.score_tol)]
    if bad:
        print(f"CHECK FAILED: {len(bad)} comparison(s) beyond box {args.box_tol} px / score {args.score_tol}")
        for r in bad:
            for note in r.notes[:5]:
                print("  " + note)
        return 1
    print(f"check passed: largest box diff {max(r.max_box_diff for r in results):.3g} px, "
          f"largest score diff {max(r.max_score_diff for r in results):.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
