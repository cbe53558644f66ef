"""Write trainval.txt / val.txt / test.txt (image sets) for a DOTA-format data set folder
(DOTA_devkit.image_sets), in that folder or, with --out, in another one (a read-only data set).

Stratified: each class with at least 2 images gets one in val (then in test) while keeping one for
training; the rest is filled at random to the requested fractions. The same --seed gives the same
files. The splits are disjoint (trainval = what is trained on); test.txt is written empty with
--test 0. A per-class table of image and object counts is printed.

Examples::

    python tools/make_splits.py --data datasets/my_data --val 0.1
    python tools/make_splits.py --data datasets/my_data --val 0.15 --test 0.15 --seed 3 --classes dota1.0
    python tools/make_splits.py --data /readonly/dota --out my_splits --val 0.1
        # then train with --set data.train_split=my_splits/trainval.txt (a path to a split file)
"""

from __future__ import annotations

import argparse
import logging
import sys

from DOTA_devkit.classes import load_class_list
from DOTA_devkit.image_sets import make_image_set_files


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data set folder (images/, labelTxt/)")
    p.add_argument("--val", type=float, default=0.1, help="fraction of images in val.txt (default 0.1)")
    p.add_argument("--test", type=float, default=0.0, help="fraction of images in test.txt (default 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--classes", help="class list (dota1.0, ... or a file): table order, unknown names "
                                     "reported; default: the names found")
    p.add_argument("--image-dir", default="images", help="image folder inside --data")
    p.add_argument("--label-dir", default="labelTxt", help="label folder inside --data")
    p.add_argument("--out", help="folder for the split files (created; default: --data)")
    p.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        classes = load_class_list(args.classes) if args.classes else None
        result = make_image_set_files(args.data, args.val, args.test, args.seed, classes, args.image_dir,
                                      args.label_dir, write=not args.dry_run, out_dir=args.out)
    except PermissionError as e:
        print(f"error: cannot write the split files ({e}); write them elsewhere with --out DIR",
              file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result.table(classes))
    if result.report.issues:
        print(f"labels: {result.report.summary()}")
    if not args.dry_run:
        sizes = ", ".join(f"{name}.txt {len(ids)}" for name, ids in result.splits.items())
        print(f"wrote {sizes} in {args.out or args.data}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
