"""Generate a synthetic DOTA-format data set (images/, labelTxt/, split files, classes.txt).

Examples::

    python tools/make_synthetic.py --out datasets/syn_hard --images 500 --seed 1 --size 608
    python tools/make_synthetic.py --default          # the cached default set used by tools/train.py

--out must be a new or empty folder, or a set written by this tool with the same parameters
(recorded in OUT/.bbav_synthetic.json): anything else is refused (exit 2), never overwritten.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bbavectors.data.synthetic import SyntheticParams, ensure_default_dataset, make_synthetic_dataset


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = SyntheticParams()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder (created; an existing one must be empty or the same set)")
    p.add_argument("--images", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same files)")
    p.add_argument("--size", type=int, default=defaults.image_size, help="image side in pixels")
    p.add_argument("--objects", type=int, nargs=2, metavar=("MIN", "MAX"), default=defaults.num_objects,
                   help="objects per image (inclusive range)")
    p.add_argument("--object-size", type=float, nargs=2, metavar=("MIN", "MAX"),
                   default=defaults.size_range, help="object long side in pixels")
    p.add_argument("--difficult", type=float, default=defaults.difficult_fraction,
                   help="fraction of faint objects labelled difficult")
    p.add_argument("--texture", type=float, default=defaults.texture, help="background texture, 0..1")
    p.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    p.add_argument("--test-fraction", type=float, default=defaults.test_fraction)
    p.add_argument("--default", action="store_true",
                   help="create (once) the default set used by tools/train.py and print its folder")
    args = p.parse_args(argv)
    if not args.default and not args.out:
        p.error("--out is required (or use --default)")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        if args.default:
            print(ensure_default_dataset(args.out))
            return 0
        params = SyntheticParams(
            image_size=args.size, num_objects=tuple(args.objects), size_range=tuple(args.object_size),
            difficult_fraction=args.difficult, texture=args.texture,
            val_fraction=args.val_fraction, test_fraction=args.test_fraction,
        )
        out = make_synthetic_dataset(args.out, args.images, args.seed, args.size, params)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.images} images to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
