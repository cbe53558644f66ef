"""Parameters and FLOPs of a network; ``python -m bbavectors.models.complexity`` prints a table.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``: it counts matrix multiplies and
convolutions (one multiply-add = 2 FLOPs) and ignores element-wise ops (BN, ReLU, resize, add), so
the numbers are about twice the "GMACs" most papers quote. The forward runs on a copy of the model on
the meta device: only shapes are computed, so even resnet152 at 608x608 takes a fraction of a second.
"""

from __future__ import annotations

import argparse
import copy
import logging

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..config import Config, ModelConfig
from .backbones import REFERENCE_BACKBONES
from .builder import build_model

__all__ = ["model_complexity", "complexity_table"]

logger = logging.getLogger(__name__)


def model_complexity(model: nn.Module, size: int | tuple[int, int], batch: int = 1) -> tuple[int, int]:
    """``(parameters, FLOPs)`` of one forward of a ``(batch, 3, H, W)`` input, ``size`` = H or (H, W).

    The model is left untouched (a deep copy runs, in eval mode, on the meta device).
    """
    height, width = (size, size) if isinstance(size, int) else size
    params = sum(p.numel() for p in model.parameters())
    meta = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(torch.empty(batch, 3, height, width, device="meta"))
    return params, int(counter.get_total_flops())


def complexity_table(
    backbones: list[str], head_widths: list[int], size: int = 608, num_classes: int = 15
) -> list[tuple[str, int, float, float]]:
    """Rows ``(backbone, head width, parameters in M, GFLOPs)`` of CTRBOX at ``size`` x ``size``, batch 1."""
    rows = []
    for name in backbones:
        for width in head_widths:
            cfg = Config(model=ModelConfig(backbone=name, head_width=width))
            params, flops = model_complexity(build_model(cfg, num_classes), size)
            rows.append((name, width, params / 1e6, flops / 1e9))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", nargs="+", default=list(REFERENCE_BACKBONES))
    parser.add_argument("--head-widths", nargs="+", type=int, default=[256, 64])
    parser.add_argument("--size", type=int, default=608)
    parser.add_argument("--num-classes", type=int, default=15)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = complexity_table(args.backbones, args.head_widths, args.size, args.num_classes)
    # The table is this command's output, so it goes to stdout (Markdown, ready for the docs).
    print(f"| backbone | head width | params (M) | GFLOPs @ {args.size} |")
    print("| --- | ---: | ---: | ---: |")
    for name, width, params, gflops in rows:
        print(f"| {name} | {width} | {params:.2f} | {gflops:.1f} |")


if __name__ == "__main__":
    main()
