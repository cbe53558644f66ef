"""Convert roLabelImg XML labels to a DOTA data set folder, or back (--to-xml).

Examples::

    # XML (images beside them) -> my_data/labelTxt, my_data/images, my_data/classes.txt
    python tools/convert_rolabelimg.py --src labelled/ --dst datasets/my_data --classes classes.txt
    # images elsewhere, hard-linked instead of copied
    python tools/convert_rolabelimg.py --src xml/ --images photos/ --dst datasets/my_data --link
    # DOTA -> roLabelImg XML + images in one folder, to fix labels in the tool
    python tools/convert_rolabelimg.py --to-xml --src datasets/my_data --dst to_fix/

The same conversions, and every other format (HRSC2016, DIOR-R, YOLO-OBB, LabelMe, CVAT), are in
tools/convert_dataset.py (--from rolabelimg, --from dota --to rolabelimg); this tool keeps its flags.
Images are decoded: an unreadable one skips its XML, a size other than the XML's <size> is reported;
--to-xml reports images that have no label file.

Bad files and objects are reported with file, line and object index, skipped and counted; --strict
stops at the first one instead. With --classes FILE: an existing file checks the names (unknown ->
skipped), a missing one is created from the names found (sorted alphabetically).
"""

from __future__ import annotations

import argparse
import logging
import sys

from DOTA_devkit.formats.rolabelimg import convert_dota_to_rolabelimg, convert_rolabelimg_to_dota
from DOTA_devkit.labels import LabelError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True,
                   help="folder of roLabelImg .xml files; with --to-xml a DOTA folder (labelTxt/ inside) "
                        "or a labelTxt folder")
    p.add_argument("--dst", required=True,
                   help="output folder: gets labelTxt/, images/, classes.txt (with --to-xml: .xml + images)")
    p.add_argument("--classes", metavar="FILE",
                   help="class list file: checked against when it exists, created from the data otherwise")
    p.add_argument("--to-xml", action="store_true", help="DOTA labelTxt -> roLabelImg XML")
    p.add_argument("--images", metavar="DIR",
                   help="image folder (default: beside the XML; with --to-xml: <src>/images)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad file or object")
    p.add_argument("--link", action="store_true",
                   help="hard-link images (symlink across file systems) instead of copying them")
    p.add_argument("--labels-only", action="store_true",
                   help="convert labels without looking for images (no images written)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    convert = convert_dota_to_rolabelimg if args.to_xml else convert_rolabelimg_to_dota
    try:
        summary = convert(args.src, args.dst, classes_file=args.classes, image_dir=args.images,
                          strict=args.strict, link=args.link, labels_only=args.labels_only,
                          progress=not args.quiet)
    except (LabelError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.summary())
    for kind, count in sorted(summary.report.skipped().items()):
        print(f"  skipped {count} {kind} (see the warnings above for files and lines)")
    if summary.classes:
        print(f"classes ({len(summary.classes)}): {' '.join(summary.classes)}")
    return 0 if summary.written else 1


if __name__ == "__main__":
    raise SystemExit(main())
