"""Trunks that give stride 4, 8, 16 and 32 feature maps, with their channels read from the trunk.

``build_backbone(name)`` accepts any torchvision classification model (``torchvision_backbone_names()``,
i.e. ``torchvision.models.list_models(module=torchvision.models)``) that has maps at those strides,
and any timm model (``"timm:<name>"``). ``REFERENCE_BACKBONES`` are the trunks whose taps and cost
docs/model.md lists. Every trunk is cut into the same five *stages* so that ``trainable_layers`` means
the same thing everywhere, counted from the deepest stage as torchvision's detection models do:

========  =============================================  ==========================
stage     layers whose output has stride                 resnet example
========  =============================================  ==========================
0 (stem)  1 or 2                                         conv1, bn1
1         4                                              layer1 (and maxpool)
2         8                                              layer2
3         16                                             layer3
4         32                                             layer4
========  =============================================  ==========================

``trainable_layers=k`` leaves the last ``k`` stages trainable: 5 trains all, 0 freezes the trunk.

The strides and channels come from the trunk itself: a dry run of a small image through the
classifier's layers for torchvision, ``feature_info`` for timm. For each stride the *last* layer with
that output stride is tapped (for VGG: the ReLU before each max-pool, and the last max-pool for 32).
Classifiers without such maps (vision transformers, valid-padding nets such as alexnet or
inception_v3) are refused with a ``ValueError`` naming the model.

Weights (``pretrained``) come from :mod:`bbavectors.models.weights`. The FPN trunk for torchvision's
detectors is :func:`bbavectors.models.fpn.build_fpn_backbone`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FrozenBatchNorm2d

from .weights import IMAGENET, WeightsReport, load_weights, torchvision_classifier

__all__ = [
    "REFERENCE_BACKBONES",
    "FEATURE_STRIDES",
    "Backbone",
    "build_backbone",
    "convert_frozen_batchnorm",
    "torchvision_backbone_names",
]

logger = logging.getLogger(__name__)

#: The trunks documented in docs/model.md (taps, cost table) and run by the model tests; any other
#: torchvision classifier with stride 4..32 maps, and any timm model, works the same way.
REFERENCE_BACKBONES: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "vgg16",
    "vgg16_bn",
)
TIMM_PREFIX = "timm:"
#: Strides of the four maps every trunk returns (the decoder fuses them up to the first one).
FEATURE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)
NUM_STAGES = 5
#: Image used to measure strides: small (stride 32 is 2x3) and not square, so that a channels-last
#: output ``(B, H, W, C)`` (swin) can never pass for ``(B, C, H, W)``.
_PROBE_HW = (64, 96)
#: Children of torchvision classifiers that start the classification head (the trunk ends before).
_HEAD_NAMES = ("avgpool", "fc", "classifier")


def torchvision_backbone_names() -> list[str]:
    """Every torchvision classification model name (those with stride 4..32 maps work as trunks)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


class Backbone(nn.Module):
    """A trunk returning ``[C2, C3, C4, C5]`` at strides ``[4, 8, 16, 32]``.

    ``forward(x)``: ``x`` is ``(B, 3, H, W)``; returns a list of 4 tensors, the i-th of shape
    ``(B, channels[i], H / strides[i], W / strides[i])`` (exact when H, W are multiples of 32).

    Attributes:
        body: the feature extractor (a torchvision FX graph module or a timm ``features_only`` model);
            its state-dict keys are the classifier's own names.
        channels: channels of the four maps, read from the trunk.
        strides: ``[4, 8, 16, 32]``.
        stage_of_param: stage (0 = stem .. 4 = stride 32) of every parameter of ``body``.
        weights_report: what ``pretrained`` loaded (None when built without a weight file).
    """

    def __init__(
        self,
        name: str,
        body: nn.Module,
        channels: Sequence[int],
        stage_of_param: Mapping[str, int],
    ) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.channels = [int(c) for c in channels]
        self.strides = list(FEATURE_STRIDES)
        self.stage_of_param = dict(stage_of_param)
        self.weights_report: WeightsReport | None = None

    def forward(self, x: Tensor) -> list[Tensor]:
        out = self.body(x)
        feats = list(out.values()) if isinstance(out, Mapping) else list(out)
        return feats

    def set_trainable_layers(self, trainable_layers: int) -> None:
        """Train the last ``trainable_layers`` stages (0..5) and freeze the others."""
        if not 0 <= trainable_layers <= NUM_STAGES:
            raise ValueError(f"trainable_layers must be in [0, {NUM_STAGES}], got {trainable_layers}")
        first_trainable = NUM_STAGES - trainable_layers
        for name, param in self.body.named_parameters():
            param.requires_grad_(self.stage_of_param[name] >= first_trainable)


# --------------------------------------------------------------------------- frozen batch norm


def _frozen_copy(bn: nn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        if bn.weight is not None and bn.bias is not None:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        if bn.running_mean is not None and bn.running_var is not None:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    return frozen


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d / SyncBatchNorm by a FrozenBatchNorm2d holding the same numbers.

    The layer's own ``eps`` is kept (mobilenets train with 1e-3), so the converted trunk computes what
    the original does in eval mode. Returns the module (a new one when ``module`` itself is a BN).
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        return _frozen_copy(module)
    for name, child in module.named_children():
        new = convert_frozen_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


# --------------------------------------------------------------------------- stages


def _stage_for_stride(stride: int) -> int:
    """Stage index of a layer from its output stride: <=2 -> 0 (stem), 4 -> 1, ..., 32 -> 4."""
    if stride <= 2:
        return 0
    return min(int(round(math.log2(stride))) - 1, NUM_STAGES - 1)


def _stage_map(body: nn.Module, levels: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Stage of every parameter of ``body``, from its layers in forward order with their strides.

    ``levels`` are ``(module name, output stride)`` in forward order. A parameter belongs to the
    first level whose module (with all its descendants) ends at or after the parameter's module in
    ``named_modules`` order: parameterless glue between levels (a stem conv before timm's ``act1``)
    joins the next level. Level names absent from ``body`` are skipped; timm's flattened names
    (``blocks_4`` for ``blocks.4``) are accepted.
    """
    order = [name for name, _ in body.named_modules()]
    position = {name: i for i, name in enumerate(order)}
    ends: list[tuple[int, int]] = []
    for name, stride in levels:
        resolved = name if name in position else name.replace(".", "_")
        if resolved not in position:
            logger.debug("stage split: module %s not found, skipped", name)
            continue
        end = position[resolved]
        while end + 1 < len(order) and order[end + 1].startswith(resolved + "."):
            end += 1
        ends.append((end, _stage_for_stride(stride)))
    if not ends:
        raise ValueError("cannot split the trunk into stages: none of its feature modules was found")
    stages: dict[str, int] = {}
    for pname, _ in body.named_parameters():
        owner = pname.rsplit(".", 1)[0] if "." in pname else ""
        pos = position.get(owner, len(order))
        stages[pname] = next((stage for end, stage in ends if pos <= end), NUM_STAGES - 1)
    return stages


# --------------------------------------------------------------------------- torchvision trunks


@dataclass
class _Layer:
    """One layer of the dry run: its qualified name, output stride and channels."""

    name: str
    #: Output stride rounded to an integer (for the stage split).
    stride: int
    #: True when the map is exactly ``probe size / stride`` on both sides (it can be tapped).
    exact: bool
    channels: int


def _top_level_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The classifier's trunk as layers run one after the other, with qualified names.

    ``features``-style models (mobilenets, VGG, efficientnet, convnext, densenet) run
    ``model.features``; the others (resnets, regnets, shufflenets, mnasnets) run their children up to
    the global pooling. Side classifiers (googlenet's ``aux1``) are off the main path and skipped.
    """
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        return [(f"features.{name}", layer) for name, layer in features.named_children()]
    layers: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear)) or name in _HEAD_NAMES:
            break
        if "aux" not in name.lower():
            layers.append((name, child))
    return layers


def _skips_a_feature_stride(stride_in: int, stride_out: int) -> bool:
    return any(stride_in < s < stride_out for s in FEATURE_STRIDES)


@torch.no_grad()
def _probe(layers: Sequence[tuple[str, nn.Module]]) -> tuple[list[_Layer], Exception | None]:
    """Dry-run a small image through the layers, in order; call the model's eval mode first.

    A ``nn.Sequential`` that jumps over a feature stride (regnet's ``trunk_output``, mnasnet's
    ``layers``) is opened and its children are run instead. The run ends at the first layer that
    fails (the error is returned) or does not return a ``(B, C, H, W)`` map: what follows is not a
    chain of conv layers. The input is on the device of the layers' parameters (meta included).
    """
    height, width = _PROBE_HW
    device = next((p.device for _, layer in layers for p in layer.parameters()), torch.device("cpu"))
    x = torch.zeros(1, 3, height, width, device=device)
    stride_in = 1
    pending = list(layers)
    out: list[_Layer] = []
    while pending:
        name, layer = pending.pop(0)
        try:
            y = layer(x)
        except Exception as e:  # any op can reject a map it was not meant for (shapes, dims, dtypes)
            logger.debug("probe stops at %s: %s", name, e)
            return out, e
        if not isinstance(y, Tensor) or y.ndim != 4:
            break
        stride = max(1, round(height / y.shape[-2]))
        if isinstance(layer, nn.Sequential) and len(layer) > 1 and _skips_a_feature_stride(stride_in, stride):
            pending[:0] = [(f"{name}.{child}", module) for child, module in layer.named_children()]
            continue
        exact = y.shape[-2] * stride == height and y.shape[-1] * stride == width
        out.append(_Layer(name, stride, exact, int(y.shape[1])))
        x, stride_in = y, stride
    return out, None


def _probe_on_meta(name: str) -> list[_Layer] | None:
    """The dry run on a copy built on the meta device: shapes only, no kernels, no weight init.

    None when the copy cannot be built or an op stops the run there (the real model then decides).
    """
    try:
        with torch.device("meta"):
            model = torchvision.models.get_model(name, weights=None)
    except Exception as e:  # an op without a meta kernel in the model's __init__ (regnet's init)
        logger.debug("%s on the meta device failed (%s); probing the real model", name, e)
        return None
    layers, error = _probe(_top_level_layers(model.eval()))
    return None if error is not None else layers


def _probe_classifier(name: str, model: nn.Module) -> list[_Layer]:
    """The classifier's layers with their strides and channels, read on the meta device when it can."""
    layers = _probe_on_meta(name)
    if layers is None:
        was_training = model.training
        model.eval()  # BatchNorm's running statistics (possibly pretrained) must not move
        layers, _ = _probe(_top_level_layers(model))
        model.train(was_training)
    return layers


def _taps(probe: Sequence[_Layer], name: str) -> list[_Layer]:
    """The last layer at each of the strides 4, 8, 16, 32; ValueError naming the model if one lacks."""
    last = {layer.stride: layer for layer in probe if layer.exact}
    absent = [s for s in FEATURE_STRIDES if s not in last]
    if absent:
        raise ValueError(
            f"backbone {name!r} has no feature map at stride {absent} (exact strides seen: {sorted(last)}); "
            f"BBAVectors needs maps at strides {list(FEATURE_STRIDES)}"
        )
    return [last[s] for s in FEATURE_STRIDES]


def _build_torchvision(name: str, pretrained: str | None, frozen_bn: bool) -> Backbone:
    model = torchvision_classifier(name, pretrained)
    probe = _probe_classifier(name, model)
    taps = _taps(probe, name)
    trunk = probe[: probe.index(taps[-1]) + 1]
    report = None
    if pretrained not in (None, IMAGENET):
        assert pretrained is not None
        names = [layer.name for layer in trunk]
        trunk_keys = [k for k in model.state_dict() if any(k.startswith(f"{t}.") for t in names)]
        report = load_weights(model, pretrained, trunk_keys)
    if frozen_bn:
        model = convert_frozen_batchnorm(model)
    # FrozenBatchNorm2d stays one module in the traced graph (as BatchNorm2d does), not inlined ops.
    body = create_feature_extractor(
        model,
        return_nodes={tap.name: str(i) for i, tap in enumerate(taps)},
        tracer_kwargs={"leaf_modules": [FrozenBatchNorm2d]},
    )
    levels = [(layer.name, layer.stride) for layer in trunk]
    backbone = Backbone(name, body, [tap.channels for tap in taps], _stage_map(body, levels))
    backbone.weights_report = report
    return backbone


# --------------------------------------------------------------------------- timm trunks


def _import_timm() -> Any:
    try:
        import timm
    except ImportError as e:
        raise ImportError(
            'timm trunks need the optional timm package: pip install -e ".[timm]" (or pip install timm)'
        ) from e
    return timm


def _timm_feature_info(timm: Any, name: str) -> list[dict[str, Any]]:
    """All feature levels of a timm model (reduction, channels, module), built on the meta device."""
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; timm.list_models('pattern*') lists the names")
    try:
        # The meta device builds the module tree without allocating or initialising weights.
        with torch.device("meta"):
            probe = timm.create_model(name, pretrained=False, features_only=True)
    except Exception as e:  # an op without a meta kernel in some model's __init__: build it for real
        logger.debug("timm:%s on the meta device failed (%s); building on the CPU", name, e)
        probe = timm.create_model(name, pretrained=False, features_only=True)
    return [dict(d) for d in probe.feature_info.get_dicts()]


def _build_timm(name: str, pretrained: str | None, frozen_bn: bool) -> Backbone:
    timm = _import_timm()
    info = _timm_feature_info(timm, name)
    indices: list[int] = []
    for stride in FEATURE_STRIDES:
        candidates = [i for i, d in enumerate(info) if d["reduction"] == stride]
        if not candidates:
            raise ValueError(
                f"timm:{name} has no feature map at stride {stride} "
                f"(reductions {[d['reduction'] for d in info]}); BBAVectors needs strides 4, 8, 16, 32"
            )
        indices.append(candidates[-1])
    body = timm.create_model(
        name, pretrained=pretrained == IMAGENET, features_only=True, out_indices=tuple(indices)
    )
    report = None
    if pretrained not in (None, IMAGENET):
        assert pretrained is not None
        report = load_weights(body, pretrained, body.state_dict().keys())
    if frozen_bn:
        # timm's own converter also handles its fused BatchNormAct2d layers.
        body = timm.layers.freeze_batch_norm_2d(body)
    channels = [int(info[i]["num_chs"]) for i in indices]
    levels = [(str(d["module"]), int(d["reduction"])) for d in info]
    backbone = Backbone(f"{TIMM_PREFIX}{name}", body, channels, _stage_map(body, levels))
    backbone.weights_report = report
    return backbone


# --------------------------------------------------------------------------- entry point


def build_backbone(
    name: str,
    pretrained: str | None = None,
    trainable_layers: int = 5,
    frozen_bn: bool = False,
) -> Backbone:
    """Build a trunk giving stride 4, 8, 16, 32 features (BBAVectors' defaults: all trainable, plain BN).

    Args:
        name: a torchvision classification model (``torchvision_backbone_names()``) or
            ``"timm:<model name>"``.
        pretrained: None (random init), ``"imagenet"`` (torchvision's ``DEFAULT`` weights or timm's
            pretrained weights; needs network or a filled cache) or a local state-dict file
            (see :mod:`bbavectors.models.weights`).
        trainable_layers: stages (0..5, counted from the deepest) left trainable.
        frozen_bn: replace BatchNorm by FrozenBatchNorm2d (fixed statistics and affine terms).

    Returns:
        A :class:`Backbone`.

    Raises:
        ValueError: unknown name, a model without stride 4..32 maps, or ``trainable_layers``
            outside 0..5.
    """
    if not 0 <= trainable_layers <= NUM_STAGES:
        raise ValueError(f"trainable_layers must be in [0, {NUM_STAGES}], got {trainable_layers}")
    if name.startswith(TIMM_PREFIX):
        backbone = _build_timm(name[len(TIMM_PREFIX) :], pretrained, frozen_bn)
    elif name in torchvision_backbone_names():
        backbone = _build_torchvision(name, pretrained, frozen_bn)
    else:
        raise ValueError(
            f"unknown backbone {name!r}: expected a torchvision classification model "
            f"({', '.join(REFERENCE_BACKBONES)}, ...; "
            "torchvision.models.list_models(module=torchvision.models) lists them) or timm:<name>"
        )
    backbone.set_trainable_layers(trainable_layers)
    logger.debug("backbone %s: channels %s", backbone.name, backbone.channels)
    return backbone
