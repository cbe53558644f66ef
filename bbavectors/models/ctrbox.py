"""CTRBOX: trunk -> decoder (stride 4) -> heads, on inputs of any size."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ..config import DOWN_RATIO
from .backbones import Backbone
from .decoder import Decoder
from .heads import Heads

__all__ = ["CTRBOX"]


class CTRBOX(nn.Module):
    """The BBAVectors network, assembled from its parts (as torchvision's detectors are).

    ``forward(x)``: ``x`` is ``(B, 3, H, W)``, normalised; returns logits
    ``{"hm": (B, num_classes, h, w), "wh": (B, 10, h, w), "reg": (B, 2, h, w), "cls_theta": (B, 1, h, w)}``
    (and ``"angle": (B, 2, h, w)`` when the heads have the angle head, ``model.angle_head``)
    with ``h = ceil(H / 4)``, ``w = ceil(W / 4)``: 608x608 gives 152x152, 600x800 gives 150x200.

    ``down_ratio`` is that output stride, :data:`bbavectors.config.DOWN_RATIO`.

    Any input size works. The trunk needs sides that are multiples of its deepest stride (32) for its
    maps to line up, so the input is zero-padded on the right and bottom to the next multiple of 32,
    run, and the outputs are cropped back to ``ceil(H/4) x ceil(W/4)``. Padding only on the far sides
    keeps the grid anchored at the top-left corner: output pixel ``(i, j)`` always corresponds to input
    pixel ``(4i, 4j)``, whatever the padding. Zero is the mean colour of a normalised image. Sizes
    that are already multiples of 32 are not padded at all (fastest).

    ``grid_offset`` (pixels, ``model.grid_offset`` of the config): where the output cells lie on the
    input, for the encoder of the targets and the decoder of the outputs: cell ``j`` covers input
    pixels ``[4 j - grid_offset, 4 j + 4 - grid_offset)`` (0: the original's grid).
    """

    def __init__(self, backbone: Backbone, decoder: Decoder, heads: Heads, grid_offset: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.heads = heads
        self.num_classes = heads.num_classes
        self.down_ratio = DOWN_RATIO
        self.grid_offset = float(grid_offset)
        self.size_divisor = max(backbone.strides)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        height, width = x.shape[-2:]
        pad_h = -height % self.size_divisor
        pad_w = -width % self.size_divisor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        out = self.heads(self.decoder(self.backbone(x)))
        if pad_h or pad_w:
            out_h = -(-height // DOWN_RATIO)
            out_w = -(-width // DOWN_RATIO)
            out = {k: v[..., :out_h, :out_w] for k, v in out.items()}
        return out
