"""Speed measurements, each against a baseline measured in the same run (docs/training.md, docs/targets.md).

Subcommands::

    # training: model-only step vs the full loop (PNG files -> loader -> device targets), per trunk
    python tools/benchmark.py train --backbones resnet18 resnet101 --batch-size 16 --workers 8
    python tools/benchmark.py train --device cpu --input-size 128 --batch-size 2 --steps 3   # smoke test

    # target encoding on one CPU core vs the original's per-object loop
    python tools/benchmark.py targets --objects 50 200

    # inference: patches/s and one whole scene vs the original pipeline
    python tools/benchmark.py infer --backbone resnet18

``python tools/benchmark.py <subcommand> --help`` lists each one's options.
"""

from __future__ import annotations

import argparse
import logging
import sys


def _run_targets(args: argparse.Namespace) -> int:
    from bbavectors.benchmarks.targets import main as targets_main

    return int(targets_main(list(args.rest)))


def build_parser() -> argparse.ArgumentParser:
    from bbavectors.benchmarks.infer import add_infer_subcommand
    from bbavectors.benchmarks.train import add_train_subcommand

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_subcommand(sub)
    targets = sub.add_parser("targets", add_help=False,
                             help="target encoding speed vs the original's loop (options: targets --help)")
    targets.add_argument("rest", nargs=argparse.REMAINDER)
    targets.set_defaults(func=_run_targets)
    add_infer_subcommand(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["targets"]:
        # Its own command line (options, --help) belongs to bbavectors.benchmarks.targets.
        return _run_targets(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
