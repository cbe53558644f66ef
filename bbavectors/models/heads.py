"""The four BBAVectors heads (heatmap, box-boundary vectors, offset and orientation class) and the
optional angle head."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["HEAD_CHANNELS", "HM_BIAS", "Heads"]

#: Output channels of the class-independent heads: ``wh`` = t, r, b, l vectors (x, y each) then the
#: external box's w, h; ``reg`` = sub-pixel centre offset; ``cls_theta`` = "use the vectors" logit.
#: ``angle`` (optional, ``model.angle_head``) = the long side's direction ``(cos 2 phi, sin 2 phi)``.
HEAD_CHANNELS: dict[str, int] = {"wh": 10, "reg": 2, "cls_theta": 1, "angle": 2}
#: Initial heatmap bias: sigmoid(-2.19) ~= 0.1, so the focal loss starts small (CenterNet's prior).
HM_BIAS = -2.19


def _head(in_channels: int, width: int, out_channels: int, final_kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=True),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, out_channels, kernel_size=final_kernel, padding=final_kernel // 2, bias=True),
    )


class Heads(nn.Module):
    """``hm``, ``wh``, ``reg`` and ``cls_theta`` on the decoder's stride-4 map; returns logits.

    ``forward(x)``: ``x`` is ``(B, in_channels, h, w)``; returns ``{"hm": (B, num_classes, h, w),
    "wh": (B, 10, h, w), "reg": (B, 2, h, w), "cls_theta": (B, 1, h, w)}``, all raw logits / values
    (no sigmoid: the loss uses logits and decoding applies the sigmoid). With ``angle=True`` also
    ``"angle": (B, 2, h, w)``, the long side's direction ``phi`` as ``(cos 2 phi, sin 2 phi)`` (not
    normalised: the decoder normalises it), its last conv 3x3 like ``wh``'s (an angle is read from
    the object's outline, beyond one pixel).

    Layout of the original (models/ctrbox_net.py, current version): each head is conv3x3(in, width)
    -> ReLU -> conv(width, out) with a 1x1 last conv, except ``wh`` whose last conv is 3x3 (its
    vectors reach beyond one pixel). ``hm``'s last bias starts at ``HM_BIAS``; the other heads keep
    PyTorch's default init, which is what the original ends up with too (its ``fill_fc_weights`` is
    called on the Sequential, not on its convs, so it never zeroes anything).
    """

    def __init__(self, in_channels: int, num_classes: int, head_width: int = 256, angle: bool = False
                 ) -> None:
        super().__init__()
        if num_classes < 1 or head_width < 1:
            raise ValueError(f"num_classes and head_width must be >= 1, got {num_classes}, {head_width}")
        self.num_classes = num_classes
        self.hm = _head(in_channels, head_width, num_classes, 1)
        self.wh = _head(in_channels, head_width, HEAD_CHANNELS["wh"], 3)
        self.reg = _head(in_channels, head_width, HEAD_CHANNELS["reg"], 1)
        self.cls_theta = _head(in_channels, head_width, HEAD_CHANNELS["cls_theta"], 1)
        self.angle = _head(in_channels, head_width, HEAD_CHANNELS["angle"], 3) if angle else None
        last = self.hm[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.constant_(last.bias, HM_BIAS)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = {"hm": self.hm(x), "wh": self.wh(x), "reg": self.reg(x), "cls_theta": self.cls_theta(x)}
        if self.angle is not None:
            out["angle"] = self.angle(x)
        return out
