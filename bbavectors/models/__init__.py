"""Networks: trunks (torchvision / timm), the BBAVectors decoder and heads, CTRBOX and its builder.

``bbavectors.models.complexity`` (parameters / FLOPs) is not imported here so that
``python -m bbavectors.models.complexity`` runs it cleanly.
"""

from .backbones import (
    KNOWN_BACKBONES,
    Backbone,
    WeightsReport,
    build_backbone,
    convert_frozen_batchnorm,
    read_state_dict,
    save_backbone_weights,
)
from .builder import build_model
from .ctrbox import CTRBOX, OUTPUT_STRIDE
from .decoder import CombinationModule, Decoder
from .detection import FPNBackbone, build_fpn_backbone
from .heads import HEAD_CHANNELS, Heads

__all__ = [
    "KNOWN_BACKBONES",
    "Backbone",
    "WeightsReport",
    "build_backbone",
    "convert_frozen_batchnorm",
    "read_state_dict",
    "save_backbone_weights",
    "build_model",
    "CTRBOX",
    "OUTPUT_STRIDE",
    "CombinationModule",
    "Decoder",
    "FPNBackbone",
    "build_fpn_backbone",
    "HEAD_CHANNELS",
    "Heads",
]
