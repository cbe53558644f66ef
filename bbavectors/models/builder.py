"""Build CTRBOX from a Config: the one place where config values become a network."""

from __future__ import annotations

import logging

from ..config import Config
from .backbones import build_backbone
from .ctrbox import CTRBOX
from .decoder import Decoder
from .heads import Heads

__all__ = ["build_model"]

logger = logging.getLogger(__name__)


def build_model(cfg: Config, num_classes: int) -> CTRBOX:
    """CTRBOX for ``num_classes`` classes from ``cfg.model`` (trunk, weights, freezing, head width)."""
    m = cfg.model
    backbone = build_backbone(
        m.backbone, pretrained=m.pretrained, trainable_layers=m.trainable_layers, frozen_bn=m.frozen_bn
    )
    decoder = Decoder(backbone.channels, corner_aligned=m.align_grid, min_channels=m.decoder_min_channels)
    heads = Heads(decoder.out_channels, num_classes, m.head_width, angle=m.angle_head)
    model = CTRBOX(backbone, decoder, heads, grid_offset=m.grid_offset)
    logger.info(
        "CTRBOX %s: trunk channels %s, decoder output %d, head width %d, %d classes, %.2fM parameters",
        m.backbone,
        backbone.channels,
        decoder.out_channels,
        m.head_width,
        num_classes,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model
