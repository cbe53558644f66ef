"""The Faster R-CNN trunk: our trunks with a feature pyramid, for torchvision's detectors.

One entry point, :func:`build_fpn_backbone`, with the defaults of torchvision's
``resnet_fpn_backbone``: the last 3 trunk stages trainable, FrozenBatchNorm2d, 256 pyramid channels.
Example::

    from torchvision.models.detection import FasterRCNN
    from bbavectors.models import build_fpn_backbone

    backbone = build_fpn_backbone("mobilenet_v2")
    model = FasterRCNN(backbone, num_classes=3)  # the default anchors expect 5 maps: "0".."3", "pool"
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .backbones import Backbone, build_backbone

__all__ = ["FPNBackbone", "build_fpn_backbone"]


class FPNBackbone(nn.Module):
    """A :class:`Backbone` followed by a feature pyramid, shaped like torchvision's ``BackboneWithFPN``.

    ``forward(x)``: ``x`` is ``(B, 3, H, W)``; returns an OrderedDict ``"0".."3"`` (strides 4..32)
    plus ``"pool"`` (stride 64, max-pooled from ``"3"``), each ``(B, out_channels, ., .)``.

    Attributes:
        body: the trunk (its ``channels`` feed the FPN's lateral convs).
        fpn: ``torchvision.ops.FeaturePyramidNetwork`` with ``LastLevelMaxPool``.
        out_channels: channels of every pyramid level (what torchvision's detectors read).
    """

    def __init__(self, body: Backbone, out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = OrderedDict((str(i), f) for i, f in enumerate(self.body(x)))
        out: OrderedDict[str, Tensor] = self.fpn(feats)
        return out


def build_fpn_backbone(
    name: str,
    pretrained: str | None = None,
    trainable_layers: int = 3,
    frozen_bn: bool = True,
    out_channels: int = 256,
) -> FPNBackbone:
    """An FPN trunk for torchvision's detectors (Faster R-CNN, RetinaNet, ...).

    Args:
        name, pretrained: as :func:`bbavectors.models.backbones.build_backbone` (any torchvision
            classifier with stride 4..32 maps, ``"timm:<name>"``; None, ``"imagenet"`` or a file).
        trainable_layers: trunk stages left trainable, counted from the deepest (3: strides 8..32,
            as ``resnet_fpn_backbone``).
        frozen_bn: FrozenBatchNorm2d in the trunk (default). Detectors train with a few images per
            GPU, where batch statistics are too noisy to update BN.
        out_channels: channels of every pyramid level.

    Returns:
        An :class:`FPNBackbone`: ``"0".."3"`` at strides 4..32 and ``"pool"`` at stride 64.
    """
    body = build_backbone(name, pretrained=pretrained, trainable_layers=trainable_layers, frozen_bn=frozen_bn)
    return FPNBackbone(body, out_channels)
