"""Split DOTA scenes into square patches with their labels (DOTA_devkit.split).

SRC holds images/ and, for labelled data, labelTxt/; DST receives images/*.png (+ labelTxt/*.txt),
patches named <id>__<rate>__<left>___<up>. A summary (patches, cut objects, problems with their
files) is printed at the end. See docs/devkit.md.

Examples::

    python tools/split_dota.py --src DOTA/train --dst DOTA/train_608 --subsize 608 --gap 100 \\
        --rates 0.5 1.0 --workers 8
    python tools/split_dota.py --src DOTA/test --dst DOTA/test_608   # no labelTxt/: images only
"""

from __future__ import annotations

import argparse
import logging
import sys

from DOTA_devkit.classes import load_class_list
from DOTA_devkit.split import SplitOptions, split_dataset


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="folder with images/ (and optionally labelTxt/)")
    p.add_argument("--dst", required=True,
                   help="output folder (created); refused when it is --src or inside its images/labelTxt")
    p.add_argument("--subsize", type=int, default=608, help="patch side in pixels (default 608)")
    p.add_argument("--gap", type=int, default=100,
                   help="minimum overlap of neighbouring patches (default 100)")
    p.add_argument("--rates", type=float, nargs="+", default=[1.0],
                   help="resize the scene by each rate before cutting (default 1.0), e.g. --rates 0.5 1.0")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--thresh", type=float, default=0.7,
                   help="a cut object keeps its difficult flag when more than this fraction of its area "
                        "is inside the patch, else it is marked difficult 2 (default 0.7)")
    p.add_argument("--drop-empty", action="store_true", help="do not write patches without objects")
    p.add_argument("--classes", help="class list (dota1.0, dota1.5, dota2.0 or a file): other classes are "
                                     "reported and skipped (default: keep every class)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        classes = load_class_list(args.classes) if args.classes else None
        options = SplitOptions(subsize=args.subsize, gap=args.gap, rates=tuple(args.rates),
                               thresh=args.thresh, drop_empty=args.drop_empty, classes=classes)
        summary = split_dataset(args.src, args.dst, options, workers=args.workers, progress=not args.quiet)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
