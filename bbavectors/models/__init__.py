"""Networks: trunks (torchvision / timm), the BBAVectors decoder and heads, CTRBOX and its builder.

Modules: ``backbones`` (trunks at strides 4..32), ``weights`` (ImageNet or local weight files),
``decoder``, ``heads``, ``ctrbox``, ``builder`` (config -> CTRBOX), ``fpn`` (the same trunks for
torchvision's Faster R-CNN). ``bbavectors.models.complexity`` (parameters / FLOPs) is not imported
here so that ``python -m bbavectors.models.complexity`` runs it cleanly.
"""

from .backbones import (
    REFERENCE_BACKBONES,
    Backbone,
    build_backbone,
    convert_frozen_batchnorm,
    torchvision_backbone_names,
)
from .builder import build_model
from .ctrbox import CTRBOX
from .decoder import CombinationModule, Decoder
from .fpn import FPNBackbone, build_fpn_backbone
from .heads import HEAD_CHANNELS, Heads
from .weights import WeightsReport, read_state_dict, save_backbone_weights

__all__ = [
    "Backbone",
    "CTRBOX",
    "CombinationModule",
    "Decoder",
    "FPNBackbone",
    "HEAD_CHANNELS",
    "Heads",
    "REFERENCE_BACKBONES",
    "WeightsReport",
    "build_backbone",
    "build_fpn_backbone",
    "build_model",
    "convert_frozen_batchnorm",
    "read_state_dict",
    "save_backbone_weights",
    "torchvision_backbone_names",
]
