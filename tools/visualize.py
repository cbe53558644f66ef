"""Draw oriented boxes: ground-truth labelTxt, Task1 detections, a checkpoint's predictions,
or a grid of augmented training samples.

Examples::

    python tools/visualize.py --images DATA/images --labels DATA/labelTxt --out pics/gt
    python tools/visualize.py --images DATA/images --det-dir results/task1 --out pics/det --score-thresh 0.3
    python tools/visualize.py --images DATA/images --checkpoint runs/x/best.pt --out pics/pred
    python tools/visualize.py --images DATA/images --labels DATA/labelTxt --checkpoint runs/x/last.pt \
        --split splits/val.txt --limit 10 --out pics/val     # ground truth beside predictions
    python tools/visualize.py --images DATA/images --labels DATA/labelTxt --out pics --grid 16 \\
        --config configs/dota_resnet18.yaml

``--grid N`` writes only ``<out>/augmentation_grid.png``: N samples of the data set in ``--images``'
parent folder (labels from ``--labels``, default ``labelTxt/`` beside the images) with the config's
augmentations (``--config``, default config when absent) and their boxes.

``--labels`` with ``--det-dir`` or ``--checkpoint`` writes one picture per image: ground truth on the
left, predictions on the right. ``--split FILE`` draws only the images listed there (in its order),
``--limit N`` only the first N.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bbavectors.checkpoint import CheckpointLoadError
from bbavectors.config import load_config
from bbavectors.data.dataset import read_split_file
from bbavectors.data.image_io import ImageReadError, write_image
from bbavectors.inference.errors import one_line
from bbavectors.inference.tta import TTA_MODES
from bbavectors.visualize import (
    augmentation_grid,
    visualize_checkpoint,
    visualize_comparison,
    visualize_labels,
    visualize_task1,
)
from DOTA_devkit.classes import load_class_list


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--labels", help="folder of DOTA labelTxt files (ground truth; with --det-dir or "
                   "--checkpoint: drawn beside the predictions)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--det-dir", help="folder of Task1_<class>.txt detection files")
    src.add_argument("--checkpoint", help="training checkpoint: draw its predictions")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    p.add_argument("--split", default=None, help="split file: draw only these image ids, in its order")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="draw only the first N images")
    p.add_argument("--score-thresh", type=float, default=0.3, help="detections below are not drawn (0.3)")
    p.add_argument("--classes", nargs="+", default=None,
                   help="class list: a name (dota1.0, synthetic...), a class file, or class names")
    p.add_argument("--no-labels", action="store_true", help="draw boxes only (no class/score text)")
    p.add_argument("--grid", type=int, default=0, metavar="N", help="write a grid of N augmented samples")
    p.add_argument("--cols", type=int, default=4, help="grid columns (default 4)")
    p.add_argument("--config", default=None, help="config whose augment / input_size the grid uses")
    p.add_argument("--seed", type=int, default=0, help="grid augmentation seed")
    p.add_argument("--device", default="cpu", help="device for --checkpoint (cpu, cuda, cuda:1)")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="--checkpoint: test-time augmentation, as tools/test.py --tta (default none)")
    args = p.parse_args(argv)
    if not (args.labels or args.det_dir or args.checkpoint or args.grid):
        p.error("give one of --labels, --det-dir, --checkpoint, or --grid N")
    if args.tta != "none" and not args.checkpoint:
        p.error("--tta applies to --checkpoint")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be >= 1, got {args.limit}")
    return args


def resolve_classes(spec: list[str] | None) -> list[str] | None:
    if not spec:
        return None
    if len(spec) == 1:
        try:
            return list(load_class_list(spec[0]))
        except (ValueError, FileNotFoundError, KeyError):
            pass  # a single class name
    return list(spec)


def write_grid(args: argparse.Namespace, classes: list[str] | None) -> Path:
    from bbavectors.data.dataset import DotaDataset

    cfg = load_config(args.config)
    root = Path(args.images).resolve().parent
    names = classes or list(load_class_list(cfg.data.classes))
    label_dir = Path(args.labels).name if args.labels else "labelTxt"
    dataset = DotaDataset(root, None, names, cfg.data.input_size, cfg.augment,
                          image_dir=Path(args.images).name, label_dir=label_dir)
    try:
        grid = augmentation_grid(dataset, args.grid, args.cols, seed=args.seed)
    except ImageReadError as e:
        raise ImageReadError(f"--grid: {e}") from e
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "augmentation_grid.png"
    write_image(target, grid)
    return target


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        written = run(args)
    except (OSError, CheckpointLoadError, ValueError) as e:  # ImageReadError is an OSError
        print(f"visualize.py: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} picture(s) to {args.out}")
    return 0


def chosen_ids(args: argparse.Namespace) -> list[str] | None:
    """Image ids from --split / --limit (None: every image of the folder)."""
    if args.split is None and args.limit is None:
        return None
    if args.split is not None:
        ids = read_split_file(args.split)
    else:
        from bbavectors.data.dataset import list_images

        ids = sorted(list_images(args.images)) if Path(args.images).is_dir() else []
    return ids[:args.limit] if args.limit is not None else ids


def run(args: argparse.Namespace) -> list[Path]:
    classes = resolve_classes(args.classes)
    written: list[Path] = []
    labels = not args.no_labels
    ids = chosen_ids(args)
    if args.labels and (args.det_dir or args.checkpoint):
        written = visualize_comparison(args.images, args.labels, args.out, det_dir=args.det_dir,
                                       checkpoint=args.checkpoint, score_thresh=args.score_thresh,
                                       device=args.device, classes=classes, show_labels=labels, image_ids=ids,
                                       tta=args.tta)
    elif args.labels and not args.grid:
        written = visualize_labels(args.images, args.labels, args.out, classes, labels, image_ids=ids)
    elif args.det_dir:
        written = visualize_task1(args.images, args.det_dir, args.out, args.score_thresh, classes, labels,
                                  image_ids=ids)
    elif args.checkpoint:
        written = visualize_checkpoint(args.images, args.checkpoint, args.out, args.score_thresh, args.device,
                                       show_labels=labels, image_ids=ids, tta=args.tta)
    if args.grid:
        written.append(write_grid(args, classes))
    return written


if __name__ == "__main__":
    raise SystemExit(main())
