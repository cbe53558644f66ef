"""Merge patch-level DOTA Task1 results into scene-level ones (DOTA_devkit.merge).

DET_DIR holds Task1_<class>.txt whose image ids are patch names <id>__<rate>__<left>___<up>;
OUT receives Task1_<class>.txt with scene ids: polygons mapped back ((x + left) / rate) and
per-class, per-scene rotated NMS. See docs/devkit.md.

Example::

    python tools/merge_dota.py --det-dir results/val_patches --out results/val_scenes --nms-thresh 0.1
"""

from __future__ import annotations

import argparse
import logging
import sys

from DOTA_devkit.classes import load_class_list
from DOTA_devkit.merge import merge_detections
from DOTA_devkit.task1 import Task1ReadReport, read_task1_dir, write_task1_dir, zip_task1_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--det-dir", required=True, help="folder of patch-level Task1_<class>.txt")
    p.add_argument("--out", required=True, help="output folder for scene-level Task1_<class>.txt (created)")
    p.add_argument("--nms-thresh", type=float, default=0.1, help="rotated NMS IoU threshold (default 0.1)")
    p.add_argument("--classes", help="class list (dota1.0, dota1.5, dota2.0 or a file): one output file per "
                                     "class, empty ones included (default: the classes of the input files)")
    p.add_argument("--zip", help="also write this zip for the DOTA server")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        classes = load_class_list(args.classes) if args.classes else None
        report = Task1ReadReport()
        patch_dets = read_task1_dir(args.det_dir, classes, strict=args.strict, report=report)
        if report.files == 0:
            raise FileNotFoundError(f"{args.det_dir}: no Task1_<class>.txt files")
        merged = merge_detections(patch_dets, nms_thresh=args.nms_thresh)
        names = classes if classes is not None else tuple(merged)
        write_task1_dir(args.out, merged, names)
        if args.zip:
            zip_task1_dir(args.out, args.zip, names)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"read {report.summary()}")
    total_in = sum(len(d) for d in patch_dets.values())
    total_out = sum(len(d) for d in merged.values())
    print(f"merged {total_in} patch detection(s) into {total_out} scene detection(s) in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
