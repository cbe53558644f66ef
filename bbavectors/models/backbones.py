"""Trunks that give stride 4, 8, 16 and 32 feature maps, with their channels read from the trunk.

``build_backbone(name)`` accepts torchvision classifiers (``KNOWN_BACKBONES``) and any timm model
(``"timm:<name>"``). Every trunk is cut into the same five *stages* so that ``trainable_layers`` means
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

Weights (``pretrained``) are loaded into the torchvision classifier *before* it is cut into a feature
extractor, so a file uses torchvision's key names (``layer1.0.conv1.weight``, ``features.0.0.weight``);
``save_backbone_weights`` writes exactly those names, so its files load back with every key matched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FrozenBatchNorm2d

if TYPE_CHECKING:
    from .detection import FPNBackbone

__all__ = [
    "KNOWN_BACKBONES",
    "FEATURE_STRIDES",
    "Backbone",
    "WeightsReport",
    "build_backbone",
    "convert_frozen_batchnorm",
    "read_state_dict",
    "save_backbone_weights",
]

logger = logging.getLogger(__name__)

#: torchvision trunks accepted by ``build_backbone`` (plus ``"timm:<name>"``).
KNOWN_BACKBONES: tuple[str, ...] = (
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
#: Strides of the four maps every trunk returns.
FEATURE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)
NUM_STAGES = 5
#: Prefixes that wrappers add to trunk keys (DataParallel, torch.compile, detectors, the original
#: BBAVectors ``base_network``, our own ``CTRBOX.backbone.body``); stripped when reading a file.
_KEY_PREFIXES = ("module.", "_orig_mod.", "backbone.", "body.", "base_network.", "encoder.")
#: Side of the image used to measure strides; 64 keeps stride 32 at 2x2 and costs milliseconds.
_PROBE_SIZE = 64


@dataclass
class WeightsReport:
    """What a weight file gave to a trunk (keys in the trunk's own naming)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    #: Trunk keys the file did not provide (they keep their random init).
    missing: list[str] = field(default_factory=list)
    #: File keys that are not part of the model (other modules of a detector checkpoint, ...).
    unexpected: list[str] = field(default_factory=list)
    #: Keys present on both sides with different shapes (skipped).
    mismatched: list[str] = field(default_factory=list)
    #: File keys of the classifier's head (``fc``, ``classifier``), which the trunk drops.
    head: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every trunk key was loaded and every file key was used."""
        return not (self.missing or self.unexpected or self.mismatched)


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


# --------------------------------------------------------------------------- weights


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _KEY_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a local file, unwrapping common checkpoint layouts.

    Accepts a plain state dict or one nested under ``state_dict`` / ``model`` / ``model_state_dict``;
    strips wrapper prefixes (``module.``, ``backbone.``, ``body.``, ``base_network.``, ...).
    Loads with ``weights_only=True``: a file can hold tensors and plain containers, never code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights not found: {path} (expected None, 'imagenet' or a local .pth file)"
        )
    obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj)}")
    return {_strip_prefixes(str(k)): v for k, v in obj.items() if isinstance(v, Tensor)}


def _is_stat_counter(key: str) -> bool:
    # BatchNorm's step counter carries no weights, and FrozenBatchNorm2d has none to save.
    return key.endswith("num_batches_tracked")


def _load_weights(model: nn.Module, path: str | Path, trunk_keys: Iterable[str]) -> WeightsReport:
    """Load a weight file into ``model`` (strict=False) and report it; raise if no trunk key matched."""
    state = read_state_dict(path)
    own = model.state_dict()
    trunk = {k for k in trunk_keys if not _is_stat_counter(k)}
    report = WeightsReport(source=str(path))
    usable: dict[str, Tensor] = {}
    for key, value in state.items():
        if key not in own:
            if not _is_stat_counter(key):
                report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(key)
        elif key in trunk or _is_stat_counter(key):
            usable[key] = value
        else:
            report.head.append(key)
    report.loaded = sorted(k for k in usable if k in trunk)
    report.missing = sorted(trunk - set(usable))
    if not report.loaded:
        sample = sorted(state)[:5]
        raise ValueError(
            f"{path}: no key matches the trunk ({len(state)} keys in the file, e.g. {sample}; "
            f"the trunk expects e.g. {sorted(trunk)[:5]})"
        )
    model.load_state_dict(usable, strict=False)
    _log_report(report, len(trunk))
    return report


def _log_report(report: WeightsReport, n_trunk: int) -> None:
    logger.info("loaded %d/%d trunk tensors from %s", len(report.loaded), n_trunk, report.source)
    for what, keys in (
        ("missing (random init)", report.missing),
        ("unexpected (ignored)", report.unexpected),
        ("shape mismatch (ignored)", report.mismatched),
    ):
        if keys:
            logger.warning("%s: %d keys %s, e.g. %s", report.source, len(keys), what, keys[:8])
    if report.head:
        logger.info("%s: %d classifier-head keys ignored", report.source, len(report.head))


def save_backbone_weights(backbone: Backbone, path: str | Path) -> None:
    """Save the trunk's weights under the classifier's key names; ``pretrained=path`` loads them back."""
    torch.save(backbone.body.state_dict(), Path(path))


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


def _sequence(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The classifier's trunk as layers run one after the other, with qualified names.

    ``features``-style models (mobilenets, VGG) run ``model.features``; resnet-style models run their
    children up to the global pooling.
    """
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        return [(f"features.{name}", layer) for name, layer in features.named_children()]
    layers: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear)) or name in ("avgpool", "fc"):
            break
        layers.append((name, child))
    return layers


@torch.no_grad()
def _probe(layers: Sequence[tuple[str, nn.Module]]) -> list[tuple[str, int, int]]:
    """Dry-run a small image through the layers: ``(name, output stride, output channels)`` each.

    Runs in eval mode so that BatchNorm's running statistics (possibly pretrained) stay untouched.
    """
    modes = [layer.training for _, layer in layers]
    for _, layer in layers:
        layer.eval()
    x = torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE)
    out: list[tuple[str, int, int]] = []
    try:
        for name, layer in layers:
            x = layer(x)
            out.append((name, _PROBE_SIZE // x.shape[-1], x.shape[1]))
    finally:
        for (_, layer), mode in zip(layers, modes):
            layer.train(mode)
    return out


def _taps(probe: Sequence[tuple[str, int, int]], name: str) -> list[tuple[str, int]]:
    """The last layer at each of the strides 4, 8, 16, 32: ``(layer name, channels)``."""
    last: dict[int, tuple[str, int]] = {}
    for layer, stride, channels in probe:
        last[stride] = (layer, channels)
    absent = [s for s in FEATURE_STRIDES if s not in last]
    if absent:
        raise ValueError(f"{name}: no layer with output stride {absent}; strides seen: {sorted(last)}")
    return [last[s] for s in FEATURE_STRIDES]


def _torchvision_classifier(name: str, pretrained: str | None) -> nn.Module:
    if pretrained != "imagenet":
        return torchvision.models.get_model(name, weights=None)
    weights = torchvision.models.get_model_weights(name).DEFAULT  # type: ignore[attr-defined]
    try:
        return torchvision.models.get_model(name, weights=weights)
    except Exception as e:  # download errors come in many types (URLError, OSError, HTTPError...)
        raise RuntimeError(
            f"could not get torchvision's ImageNet weights {weights} for {name}: {e}. Without network, "
            f"pass a local state dict instead: model.pretrained=/path/to/{name}.pth"
        ) from e


def _build_torchvision(name: str, pretrained: str | None, frozen_bn: bool) -> Backbone:
    model = _torchvision_classifier(name, pretrained)
    layers = _sequence(model)
    probe = _probe(layers)
    taps = _taps(probe, name)
    last_tap = [layer for layer, _, _ in probe].index(taps[-1][0])
    trunk_layers = [layer for layer, _, _ in probe[: last_tap + 1]]
    report = None
    if pretrained not in (None, "imagenet"):
        assert pretrained is not None
        trunk_keys = [k for k in model.state_dict() if any(k.startswith(f"{t}.") for t in trunk_layers)]
        report = _load_weights(model, pretrained, trunk_keys)
    if frozen_bn:
        model = convert_frozen_batchnorm(model)
    # FrozenBatchNorm2d stays one module in the traced graph (as BatchNorm2d does), not inlined ops.
    body = create_feature_extractor(
        model,
        return_nodes={layer: str(i) for i, (layer, _) in enumerate(taps)},
        tracer_kwargs={"leaf_modules": [FrozenBatchNorm2d]},
    )
    levels = [(layer, stride) for layer, stride, _ in probe[: last_tap + 1]]
    backbone = Backbone(name, body, [c for _, c in taps], _stage_map(body, levels))
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
        name, pretrained=pretrained == "imagenet", features_only=True, out_indices=tuple(indices)
    )
    report = None
    if pretrained not in (None, "imagenet"):
        assert pretrained is not None
        report = _load_weights(body, pretrained, body.state_dict().keys())
    if frozen_bn:
        # timm's own converter also handles its fused BatchNormAct2d layers.
        body = timm.layers.freeze_batch_norm_2d(body)
    channels = [int(info[i]["num_chs"]) for i in indices]
    levels = [(str(d["module"]), int(d["reduction"])) for d in info]
    backbone = Backbone(f"{TIMM_PREFIX}{name}", body, channels, _stage_map(body, levels))
    backbone.weights_report = report
    return backbone


# --------------------------------------------------------------------------- entry point


@overload
def build_backbone(
    name: str,
    pretrained: str | None = ...,
    trainable_layers: int = ...,
    frozen_bn: bool = ...,
    fpn: Literal[False] = ...,
) -> Backbone: ...


@overload
def build_backbone(
    name: str,
    pretrained: str | None = ...,
    trainable_layers: int = ...,
    frozen_bn: bool = ...,
    *,
    fpn: Literal[True],
) -> FPNBackbone: ...


def build_backbone(
    name: str,
    pretrained: str | None = None,
    trainable_layers: int = 5,
    frozen_bn: bool = False,
    fpn: bool = False,
) -> Backbone | FPNBackbone:
    """Build a trunk giving stride 4, 8, 16, 32 features.

    Args:
        name: one of ``KNOWN_BACKBONES`` or ``"timm:<model name>"``.
        pretrained: None (random init), ``"imagenet"`` (torchvision's ``DEFAULT`` weights or timm's
            pretrained weights; needs network or a filled cache) or a local state-dict file.
        trainable_layers: stages (0..5, counted from the deepest) left trainable.
        frozen_bn: replace BatchNorm by FrozenBatchNorm2d (fixed statistics and affine terms).
        fpn: return a torchvision-detection compatible FPN trunk instead
            (see :func:`bbavectors.models.detection.build_fpn_backbone`).

    Returns:
        A :class:`Backbone` (or an ``FPNBackbone`` when ``fpn=True``).
    """
    if fpn:
        # Imported here: detection.py builds on this module, so a top-level import would be circular.
        from .detection import build_fpn_backbone

        return build_fpn_backbone(name, pretrained, trainable_layers, frozen_bn)
    if not 0 <= trainable_layers <= NUM_STAGES:
        raise ValueError(f"trainable_layers must be in [0, {NUM_STAGES}], got {trainable_layers}")
    if name.startswith(TIMM_PREFIX):
        backbone = _build_timm(name[len(TIMM_PREFIX) :], pretrained, frozen_bn)
    elif name in KNOWN_BACKBONES:
        backbone = _build_torchvision(name, pretrained, frozen_bn)
    else:
        raise ValueError(
            f"unknown backbone {name!r}; known: {', '.join(KNOWN_BACKBONES)}, "
            "or timm:<name> for any timm model"
        )
    backbone.set_trainable_layers(trainable_layers)
    logger.debug("backbone %s: channels %s", backbone.name, backbone.channels)
    return backbone
