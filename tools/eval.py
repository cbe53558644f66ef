"""DOTA Task1 evaluation (DOTA_devkit.eval): DOTA's own procedure, fast.

Prints a per-class table (AP07 = VOC07 11-point AP as the DOTA server, area AP, #GT, #det, final
recall) and two means: over the whole class list (DOTA's mAP, classes without ground truth count
0) and over the classes with ground truth. See docs/devkit.md.

Example::

    python tools/eval.py --det-dir results/val_scenes --label-dir DOTA/val/labelTxt --classes dota1.0 \\
        --json results/val_eval.json --plot-dir results/pr
"""

from __future__ import annotations

import argparse
import logging
import sys

from DOTA_devkit.classes import load_class_list
from DOTA_devkit.eval import EvalTimings, evaluate_task1_dirs, write_pr_curves, write_result_json
from DOTA_devkit.labels import LabelError
from DOTA_devkit.task1 import Task1FormatError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--det-dir", required=True, help="folder of Task1_<class>.txt")
    p.add_argument("--label-dir", required=True, help="labelTxt folder of the ground truth")
    p.add_argument("--imageset", help="file of image ids to evaluate (default: every label file)")
    p.add_argument("--classes", default="dota1.0",
                   help="class list: dota1.0 (default), dota1.5, dota2.0, or a file with one class per line")
    p.add_argument("--iou-thresh", type=float, default=0.5,
                   help="a match needs IoU above this, in (0, 1) (default 0.5)")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--plot-dir", help="write a precision-recall picture per class here (PNG)")
    p.add_argument("--ignore-unknown-images", action="store_true",
                   help="drop detections on images outside the image set instead of stopping")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    timings = EvalTimings()
    try:
        classes = load_class_list(args.classes)
        result = evaluate_task1_dirs(args.det_dir, args.label_dir, classes, args.imageset, args.iou_thresh,
                                     args.ignore_unknown_images, timings)
    except (OSError, ValueError, LabelError, Task1FormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result.format_table())
    print(f"time: read detections {timings.read_detections:.3f} s, read ground truth "
          f"{timings.read_ground_truth:.3f} s, evaluate {timings.compute:.3f} s")
    if args.json:
        write_result_json(args.json, result, {"det_dir": args.det_dir, "label_dir": args.label_dir,
                                              "imageset": args.imageset})
        print(f"wrote {args.json}")
    if args.plot_dir:
        paths = write_pr_curves(result, args.plot_dir)
        print(f"wrote {len(paths)} precision-recall picture(s) to {args.plot_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
