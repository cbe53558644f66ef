"""Convert an oriented-box data set between the DOTA layout and the formats users bring, or check it.

Examples::

    # to DOTA (images/, labelTxt/, classes.txt, split files)
    python tools/convert_dataset.py --from hrsc --src HRSC2016/FullDataSet --dst datasets/hrsc
    python tools/convert_dataset.py --from dior --src DIOR-R --dst datasets/dior
    python tools/convert_dataset.py --from yolo-obb --src my_yolo/data.yaml --dst datasets/mine
    python tools/convert_dataset.py --from labelme --src json/ --images photos/ --dst datasets/mine
    python tools/convert_dataset.py --from cvat --src cvat_export/ --dst datasets/mine
    # from DOTA
    python tools/convert_dataset.py --from dota --to yolo-obb --src datasets/mine --dst yolo_mine \\
        --train-split trainval --val-split val
    python tools/convert_dataset.py --from dota --to cvat --src datasets/mine --dst to_review
    # detections as pre-annotations to review in CVAT
    python tools/convert_dataset.py --from task1 --to cvat --src results/ --images scenes/ --dst review
    # a report on the data, nothing written
    python tools/convert_dataset.py --from dota --src datasets/mine --check

Every object read is written or reported (file, line or object index, problem) and counted; the
summary ends with "objects: N read = W written + S skipped". --strict stops at the first problem.
"""

from __future__ import annotations

import argparse
import logging
import sys

from DOTA_devkit.classes import load_class_list
from DOTA_devkit.formats.check import check_dataset
from DOTA_devkit.formats.cvat import CVAT_SHAPES
from DOTA_devkit.formats.dataset import (
    DEFAULT_MIN_SCORE,
    DEFAULT_WORKERS,
    READ_FORMATS,
    WRITE_FORMATS,
    convert_dataset,
    read_class_map,
)
from DOTA_devkit.formats.xml_io import XmlError
from DOTA_devkit.labels import LabelError


def _split_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, got {text!r}")
    return name, path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="from_format", required=True, choices=READ_FORMATS, help="input format")
    p.add_argument("--to", dest="to_format", default="dota", choices=WRITE_FORMATS,
                   help="output format (default dota; from dota: yolo-obb, cvat, rolabelimg)")
    p.add_argument("--src", required=True, help="the input data set (layout per format: docs/custom_data.md)")
    p.add_argument("--dst", help="output folder (not with --check)")
    p.add_argument("--classes", metavar="FILE",
                   help="class list (file or dota1.0/...): checks names, fixes the order; "
                        "a missing file is created from the names found")
    p.add_argument("--images", metavar="DIR", help="image folder, when not where the format keeps it")
    p.add_argument("--strict", action="store_true", help="stop at the first bad file, object or image")
    p.add_argument("--check", action="store_true", help="print a report on the data set, write nothing")
    p.add_argument("--copy-images", action="store_true", help="copy images (default for yolo-obb: symlinks)")
    p.add_argument("--link", action="store_true", help="hard-link images (default except yolo-obb: copy)")
    p.add_argument("--no-images", action="store_true", help="write labels only (images are still checked)")
    p.add_argument("--splits", nargs="+", type=_split_arg, default=[], metavar="NAME=FILE",
                   help="split id files to add or replace (default: the source's own, e.g. trainval.txt)")
    p.add_argument("--train-split", help="yolo-obb: split data.yaml trains on (default trainval, else train)")
    p.add_argument("--val-split", help="yolo-obb: split data.yaml validates on (default val, else test)")
    p.add_argument("--class-map", metavar="FILE",
                   help="hrsc: '<Class_ID> <name>' lines (default: every object is 'ship')")
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                   help=f"task1: detections below it are left out (default {DEFAULT_MIN_SCORE})")
    p.add_argument("--cvat-shape", choices=CVAT_SHAPES, default="polygon",
                   help="cvat output: 4-point polygons (exact, default) or rotated boxes")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"threads decoding images (default {DEFAULT_WORKERS})")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    args = p.parse_args(argv)
    if not args.check and not args.dst:
        p.error("--dst is required (or --check)")
    return args


def _image_mode(args: argparse.Namespace) -> str | None:
    if args.no_images:
        return "none"
    if args.copy_images:
        return "copy"
    if args.link:
        return "link"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.check:
            classes = load_class_list(args.classes) if args.classes else None
            cmap = read_class_map(args.class_map) if args.class_map else None
            print(check_dataset(args.from_format, args.src, classes, args.images, cmap, args.min_score))
            return 0
        report = convert_dataset(
            args.src, args.dst, args.from_format, args.to_format, classes=args.classes, image_dir=args.images,
            strict=args.strict, image_mode=_image_mode(args), splits=dict(args.splits),
            train_split=args.train_split, val_split=args.val_split, class_map=args.class_map,
            min_score=args.min_score, cvat_shape=args.cvat_shape, progress=not args.quiet,
            workers=args.workers)
    except (LabelError, XmlError, FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.files_written else 1


if __name__ == "__main__":
    raise SystemExit(main())
