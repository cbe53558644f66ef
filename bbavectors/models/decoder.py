"""The BBAVectors decoder: three CombinationModules fuse C5 -> C4 -> C3 -> C2 up to stride 4."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CombinationModule", "Decoder", "upsample_corner_aligned"]


def _conv_block(c_in: int, c_out: int, kernel_size: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def upsample_corner_aligned(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear 2x upsampling that keeps the trunk's sampling grid: ``(B, C, h, w)`` ->
    ``(B, C, H, W)``, output pixel ``j`` read at input position ``j / 2`` (the last row / column
    beyond the input repeats its edge).

    Why: a strided convolution with ``padding = kernel // 2`` (every torchvision trunk) centres its
    output ``j`` on input pixel ``2 j``, so a stride-``s`` map's cell ``j`` looks at image pixel
    ``s j``, at every depth. ``F.interpolate(align_corners=False)`` assumes cell centres at
    ``s (j + 1/2)`` instead and reads position ``j / 2 - 1/4``: each upsampling shifts the deeper
    map by a quarter of its cell, and after three of them the stride-32 features reach a stride-4
    cell 13.5 px up and left of that cell's own stride-4 features.
    """
    h, w = x.shape[-2:]
    out_h, out_w = size
    # Sizes stay symbolic (no int()): an exported graph keeps dynamic height and width.
    if out_h > 2 * h or out_w > 2 * w:
        raise ValueError(f"corner-aligned upsampling is 2x: {h}x{w} cannot fill {out_h}x{out_w}")
    # align_corners=True onto (2h - 1, 2w - 1) reads exactly j * (h - 1) / (2h - 2) = j / 2.
    y = F.interpolate(x, size=(2 * h - 1, 2 * w - 1), mode="bilinear", align_corners=True)
    # The edge repeated by concatenation, not F.pad(replicate): ONNX opset 17 has no converter for it.
    y = torch.cat([y, y[..., -1:, :]], dim=-2)
    y = torch.cat([y, y[..., -1:]], dim=-1)
    return y[..., :out_h, :out_w]


class CombinationModule(nn.Module):
    """Fuse a deeper map into its skip connection, as the original BBAVectors does.

    ``forward(x_low, x_up)``: ``x_low`` is the deeper map ``(B, c_low, h, w)``, ``x_up`` the skip
    ``(B, c_up, H, W)`` (about twice the size). ``x_low`` is resized bilinearly to exactly ``(H, W)``
    (``size=``, not a scale factor, so odd sizes work), goes through conv3x3 + BN + ReLU
    (``c_low -> c_up``), is concatenated after ``x_up`` and fused by conv1x1 + BN + ReLU
    (``2 c_up -> c_up``). Returns ``(B, c_up, H, W)``.

    ``corner_aligned``: the resize is :func:`upsample_corner_aligned` (``H <= 2 h``, ``W <= 2 w``)
    instead of the original's ``align_corners=False`` bilinear resize.

    The submodule names (``up``, ``cat_conv``) and the concat order are the original's.

    ``c_out`` (default ``c_up``, the original): the output width, when it should be wider than the
    skip: conv3x3 ``c_low -> c_out``, concatenated after ``x_up``, conv1x1 ``c_up + c_out -> c_out``;
    returns ``(B, c_out, H, W)``.
    """

    def __init__(self, c_low: int, c_up: int, batch_norm: bool = True, corner_aligned: bool = False,
                 c_out: int | None = None) -> None:
        super().__init__()
        width = c_up if c_out is None else int(c_out)
        if width < 1:
            raise ValueError(f"c_out must be >= 1, got {c_out}")
        self.up = _conv_block(c_low, width, 3, batch_norm)
        self.cat_conv = _conv_block(c_up + width, width, 1, batch_norm)
        self.corner_aligned = corner_aligned
        self.out_channels = width

    def forward(self, x_low: Tensor, x_up: Tensor) -> Tensor:
        size = (x_up.shape[-2], x_up.shape[-1])
        if self.corner_aligned:
            x_low = upsample_corner_aligned(x_low, size)
        else:
            x_low = F.interpolate(x_low, size=size, mode="bilinear", align_corners=False)
        return self.cat_conv(torch.cat((x_up, self.up(x_low)), dim=1))


class Decoder(nn.Module):
    """C5 -> C4 -> C3 -> C2 fusion; output stride 4 with the trunk's stride-4 channels (or a floor).

    ``forward(feats)``: ``feats`` are the trunk's ``[C2, C3, C4, C5]`` with ``channels`` channels at
    strides 4, 8, 16, 32; returns ``(B, out_channels, H/4, W/4)``,
    ``out_channels = max(channels[0], min_channels)``.

    For resnet101 (channels 256, 512, 1024, 2048) this is the original's ``dec_c4``
    (2048 -> 1024), ``dec_c3`` (1024 -> 512) and ``dec_c2`` (512 -> 256).

    ``corner_aligned``: every upsampling keeps the trunk's grid (:func:`upsample_corner_aligned`).

    ``min_channels``: each fused map is at least this wide, ``max(channels[i], min_channels)``
    (0: the trunk's widths, the original). Why: light trunks are thin at stride 4 (regnet_x_400mf:
    32 channels), and every head reads that one map; the floor widens only the maps below it.
    """

    def __init__(self, channels: Sequence[int], batch_norm: bool = True,
                 corner_aligned: bool = False, min_channels: int = 0) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"the decoder fuses 4 maps (strides 4..32), got channels {list(channels)}")
        if min_channels < 0:
            raise ValueError(f"min_channels must be >= 0, got {min_channels}")
        c2, c3, c4, c5 = (int(c) for c in channels)
        w4, w3, w2 = (max(c, int(min_channels)) for c in (c4, c3, c2))
        self.dec_c4 = CombinationModule(c5, c4, batch_norm, corner_aligned, c_out=w4)
        self.dec_c3 = CombinationModule(w4, c3, batch_norm, corner_aligned, c_out=w3)
        self.dec_c2 = CombinationModule(w3, c2, batch_norm, corner_aligned, c_out=w2)
        self.out_channels = w2

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        c2, c3, c4, c5 = feats
        return self.dec_c2(self.dec_c3(self.dec_c4(c5, c4), c3), c2)
