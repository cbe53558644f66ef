"""Typed configuration: dataclasses loaded from small YAML files, with CLI overrides.

A :class:`Config` is the single source of truth for a run. It is read once (``load_config``),
overridden from the command line (``apply_overrides``), and saved inside every checkpoint
(``config_to_dict``) so that a checkpoint rebuilds its own model (``config_from_dict``).

YAML layout (every section and key optional; unknown keys are errors, so typos never pass)::

    name: dota_resnet18
    model: {backbone: resnet18, head_width: 64}
    data: {classes: dota1.0, input_size: 608}
    train: {epochs: 80, batch_size: 16}

Overrides use dotted keys: ``apply_overrides(cfg, ["model.backbone=resnet50", "train.lr=2e-4"])``;
values are parsed as YAML scalars (``1e-4``, ``true``, ``[0.5, 1.0]``, ``null``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ModelConfig",
    "DataConfig",
    "AugmentConfig",
    "TargetConfig",
    "LossConfig",
    "DecodeConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "ConfigError",
    "DOWN_RATIO",
    "validate_config",
]


class ConfigError(ValueError):
    """A configuration file or override is invalid (unknown key, wrong type)."""


#: Output stride of the heads: the decoder fuses the trunk's maps up to stride 4, whatever the trunk,
#: so this is fixed by the architecture (the one definition; models, targets and decoding read it).
DOWN_RATIO = 4


@dataclass
class ModelConfig:
    """The network: trunk, decoder and heads."""

    backbone: str = "resnet101"
    #: None (random init), "imagenet" (torchvision weights, network needed) or a local .pth path.
    pretrained: str | None = None
    #: Trunk stages (counted from the deepest) whose parameters train; 5 = all, 0 = none.
    trainable_layers: int = 5
    #: Replace the trunk's BatchNorm with torchvision's FrozenBatchNorm2d (statistics fixed).
    frozen_bn: bool = False
    #: Channels of the hidden conv in each head (the original uses 256).
    head_width: int = 256
    #: Floor on the decoder's widths: each fused map has ``max(trunk channels, this)`` channels, so
    #: the heads read at least this many at stride 4 (0 = the trunk's own widths, the original).
    #: Light trunks are thin there: regnet_x_400mf has 32 channels at stride 4, resnet18 64.
    decoder_min_channels: int = 0
    #: Align the output grid with what the network sees (docs/model.md, "The output grid"): the
    #: decoder upsamples corner-aligned, as the trunk's strided convolutions sample, and output cell
    #: ``j`` covers input pixels ``[4j - 1.5, 4j + 2.5)`` (centred on its receptive field) instead of
    #: the original's ``[4j, 4j + 4)``. False = the original BBAVectors (and every older checkpoint).
    align_grid: bool = False
    #: A fifth head, ``angle``: the long side's direction as ``(cos 2 phi, sin 2 phi)`` (docs/model.md,
    #: "The angle head"). Rotated boxes are then decoded as rectangles along that direction, sized by
    #: the vectors' Gaussian: the vectors' own angle is a ratio of their components, loose for a small
    #: object whose vectors are a cell or two long; the angle head's error does not depend on size.
    #: False = the original four heads (and every older checkpoint).
    angle_head: bool = False

    @property
    def down_ratio(self) -> int:
        """Output stride of the heads, ``DOWN_RATIO`` (fixed by the architecture, so not a key)."""
        return DOWN_RATIO

    @property
    def grid_offset(self) -> float:
        """Pixels added to a centre before it is divided into output cells (and taken off after
        decoding): ``(down_ratio - 1) / 2`` = 1.5 with ``align_grid``, else 0."""
        return (DOWN_RATIO - 1) / 2 if self.align_grid else 0.0


@dataclass
class DataConfig:
    """Where the images and labels are, and which classes they hold."""

    #: Data set folder holding images/, labelTxt/ and split files; None = built-in synthetic set.
    root: str | None = None
    #: Class list: auto | dota1.0 | dota1.5 | dota2.0 | hrsc2016 | synthetic | path to a text file.
    #: ``auto``: ``<root>/classes.txt`` when it exists, else dota1.0 (the choice is logged).
    classes: str = "auto"
    #: Split files: a name in the data folder (``trainval`` -> ``<root>/trainval.txt``) or the path of a
    #: ``.txt`` file anywhere (so split files can live outside a read-only data folder).
    train_split: str = "trainval"
    val_split: str = "val"
    #: Square network input (letterbox target), a positive multiple of 32 (the trunk's stride).
    input_size: int = 608
    #: Per-channel mean / std of RGB images in [0, 1] (ImageNet), applied on the device.
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    workers: int = 4
    #: Skip (report, count) label problems instead of failing.
    strict_labels: bool = False


@dataclass
class AugmentConfig:
    """Training augmentations on image + polygons together (probabilities in [0, 1])."""

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: float = 0.5
    #: Probability of an arbitrary-angle rotation and its range in degrees.
    rotate: float = 0.0
    rotate_range: float = 180.0
    #: Random scale range around the letterbox scale, then a crop to the input size.
    scale_min: float = 0.75
    scale_max: float = 1.25
    #: Colour jitter strength (brightness / contrast / saturation), 0 disables.
    color_jitter: float = 0.3
    #: Random channel permutation probability (off by default: colour is informative).
    channel_shuffle: float = 0.0
    #: Train on random ``crop_size`` x ``crop_size`` windows cut from the image scaled as for
    #: ``data.input_size`` (objects keep the size they have at inference) instead of the whole
    #: canvas; a multiple of 32. None, or a value >= ``data.input_size``: the whole canvas (so a
    #: smaller ``--input-size`` on the command line needs no second change).
    crop_size: int | None = None
    #: Probability that a crop window is placed around a whole object drawn at random (when one
    #: fits) instead of anywhere: a uniform window cuts an object longer than about half the window
    #: most of the time, and a mostly cut object is only an ignore region, so big objects would
    #: rarely be learnt whole. Only acts with ``crop_size``.
    crop_on_objects: float = 0.0
    #: ``(dx, dy)`` in network-input pixels added to every training label before augmentation: moves
    #: labels that sit a constant offset away from their objects onto the objects. Flips and quarter
    #: turns would otherwise turn that offset into noise of its size in every direction (a left-right
    #: flip maps ``dx`` to ``-dx``). The centre calibration (``train.calibrate_centres``) then measures
    #: the offset back for the decoder. docs/training.md "Centre calibration".
    label_shift: tuple[float, float] = (0.0, 0.0)


@dataclass
class TargetConfig:
    """How ground-truth polygons become head targets."""

    #: Objects whose oriented box is smaller than this (pixels, shorter side at input scale)
    #: cannot be encoded at stride 4 and become ignore regions.
    min_size: float = 1.0
    #: cls_theta = 0 (decode with the external box) when IoU(oriented box, its external
    #: axis-aligned box) >= this; computed analytically. See bbavectors.targets.
    horizontal_iou: float = 0.98
    #: Upper bound on objects per image; objects beyond it are counted and logged, never silent.
    max_objects: int = 1000
    #: Minimum IoU kept between a box and its shifted copy when sizing the heatmap Gaussian.
    gaussian_overlap: float = 0.7
    #: Heatmap peak shape: "round" (CornerNet/CenterNet: a circle whose radius comes from
    #: ``gaussian_overlap``) or "box" (an ellipse along the oriented box, standard deviations
    #: ``box_gaussian_scale * side / 6``, as TTFNet): a thin ship's neighbours along its axis are
    #: soft negatives instead of full ones.
    gaussian_shape: str = "round"
    box_gaussian_scale: float = 0.54
    #: Centre each peak's Gaussian on the object's exact centre instead of on its centre cell (the
    #: centre cell still gets exactly 1): the neighbour nearer the true centre is then a softer
    #: negative than the one across, so the heatmap itself carries the sub-cell position.
    #: Changes nothing for objects whose radius is 0 (a one-cell window).
    subcell_peaks: bool = False
    #: Difficult objects become ignore regions (no loss) instead of positives.
    ignore_difficult: bool = True


@dataclass
class LossConfig:
    """Loss weights and focal-loss exponents."""

    hm_weight: float = 1.0
    wh_weight: float = 1.0
    reg_weight: float = 1.0
    cls_theta_weight: float = 1.0
    #: Weight of the ProbIoU box loss (bbavectors.losses; 0 = the original BBAVectors loss).
    probiou_weight: float = 0.0
    #: Weight of the angle head's L1 loss on ``(cos 2 phi, sin 2 phi)`` (only with ``model.angle_head``).
    angle_weight: float = 1.0
    #: With ``model.angle_head``: the ProbIoU term compares the box as it is decoded (the rectangle
    #: along the angle head's direction, :func:`bbavectors.probiou.direction_covariance`) with the
    #: target, so the vectors and the angle head learn the decoded box together; False: the
    #: vectors' own parallelogram, as without the head.
    angle_probiou: bool = False
    #: Cells up to this many cells from an object's centre cell (a (2r+1)^2 square) also learn its box,
    #: weighted by the heatmap target there (0 = the centre cell only, the original): the decoded peak
    #: often lands next to the centre cell.
    regress_radius: int = 0
    #: Weight of those neighbours: "heatmap" (the heatmap target there), "uniform" (1) or "aligned"
    #: (every cell of the square, the centre too, weighs its task alignment ``score * (1 - hellinger)^6``
    #: over the object's best, as TOOD weights its box loss; bbavectors.losses).
    neighbour_weight: str = "heatmap"
    #: Which cell is an object's heatmap peak (the positive): "centre", the cell holding its centre
    #: (the original), or "aligned", the cell among the ``regress_radius`` square whose prediction
    #: aligns best, ``score * (1 - hellinger)^6`` (TOOD's task-aligned assignment, one cell per object),
    #: so that the peak the decoder reads is the cell with the best box (bbavectors.losses).
    peak_assign: str = "centre"
    #: With ``peak_assign: aligned``: how many cells of each object's square are heatmap positives, the
    #: best-aligned trained to 1, the next ones (quality focal loss) to their alignment over the best,
    #: as YOLOv8 / TOOD train several cells per object (1: the best cell alone; bbavectors.losses).
    peak_topk: int = 1
    #: Half width of the smooth L1's quadratic zone for ``wh`` and ``reg``, in output cells (1 = the
    #: original; 0 = plain L1, CenterNet's): below it the gradient shrinks with the error.
    smooth_l1_beta: float = 1.0
    focal_alpha: float = 2.0
    focal_beta: float = 4.0
    #: Score the ``t, r, b, l`` vectors against the best of their 4 cyclic relabelings (the same box):
    #: no contradictory targets where the labelling rule jumps (boxes near axis alignment).
    cyclic_vectors: bool = False
    #: Train each object's heatmap peak towards the ProbIoU of the box predicted there (a quality
    #: focal loss) instead of 1, so that the score ranks tight boxes first.
    hm_quality: bool = False


@dataclass
class DecodeConfig:
    """Post-processing of the head outputs."""

    top_k: int = 500
    score_thresh: float = 0.1
    #: cls_theta probability above which the vectors (not the external box) are used.
    cls_theta_thresh: float = 0.5
    #: Decode each rotated box as the rectangle with its vectors' Gaussian (the quantity the ProbIoU
    #: loss trains; bbavectors.probiou.gaussian_rectangle) instead of the vectors' own parallelogram
    #: (the original's corners c + t + l, ..., a diamond when the vectors mix two labellings).
    #: Without effect on a model with an angle head, whose rotated boxes are rectangles already.
    rectangles: bool = False
    #: Rotated NMS IoU threshold per class; <= 0 disables NMS.
    nms_thresh: float = 0.1
    #: ``(dx, dy)`` in network-input pixels added to every decoded centre: the labels' constant
    #: offset from the centres the network learns, measured on training images at the end of
    #: training (``train.calibrate_centres``, bbavectors.engine.calibrate; docs/training.md).
    centre_shift: tuple[float, float] = (0.0, 0.0)


@dataclass
class TrainConfig:
    """Optimisation schedule and engine switches."""

    epochs: int = 80
    batch_size: int = 16
    #: Learning rate for `base_batch_size` images per step; scaled linearly with the global batch.
    lr: float = 1.25e-4
    base_batch_size: int = 16
    optimizer: str = "adamw"  # adam | adamw
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | exponential | constant
    #: Decay factor per epoch for the "exponential" schedule (the original's 0.96).
    gamma: float = 0.96
    warmup_epochs: float = 1.0
    grad_clip: float = 35.0
    ema: bool = False
    ema_decay: float = 0.9998
    #: After the last epoch, measure the labels' constant centre offset on training images and
    #: store it in ``decode.centre_shift`` (bbavectors.engine.calibrate; docs/training.md).
    calibrate_centres: bool = True
    #: Training images (spread evenly over the split, no augmentation) the calibration predicts.
    calibration_images: int = 200
    #: Fraction of the planned steps (0 = off) after which the offset is also measured once mid-run and
    #: the training labels are moved by it (``augment.label_shift``): from then on the network learns
    #: from labels that sit on the objects, whatever the flips (bbavectors.engine.calibrate,
    #: docs/training.md). Needs ``calibrate_centres``: the decoder gets the offset back from it.
    label_shift_at: float = 0.0
    #: Share of the run (0 = off) after which training takes whole input canvases instead of
    #: ``augment.crop_size`` windows, until the end: of the time budget when the run has one, else of
    #: the planned epochs. Windows make steps cheap but cut big objects and never show a whole canvas;
    #: the last part of the run then trains on what inference sees (docs/training.md).
    whole_images_at: float = 0.0
    amp: str = "bf16"  # bf16 | fp16 | none
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    val_every: int = 5
    seed: int = 0
    device: str = "auto"
    max_nonfinite: int = 10
    #: Wall-clock budget in minutes (None = off): the run measures its speed and sets the number of
    #: steps / epochs (and the learning-rate schedule) to end within it (docs/training.md).
    time_budget: float | None = None


@dataclass
class Config:
    """Everything a run needs; saved in every checkpoint."""

    name: str = "bbavectors"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


T = TypeVar("T")


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Coerce a YAML value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: cannot read {value!r} as {annotation}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(annotation, value, where)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 reads "2e-4" (no dot) as a string; accept anything float() reads.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in section '{where or 'top level'}'; known: {sorted(names)}"
        )
    kwargs = {
        k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()
    }
    return cls(**kwargs)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive_number(value: float) -> bool:
    return math.isfinite(value) and value > 0


def validate_config(cfg: Config) -> Config:
    """Check the values a run depends on (ranges, names); returns ``cfg``.

    Raises:
        ConfigError: the first bad value, named by its key, in one line.
    """
    # late import: the model package imports this module
    from .models.backbones import REFERENCE_BACKBONES, torchvision_backbone_names

    m, d, t = cfg.model, cfg.data, cfg.train
    known = m.backbone in torchvision_backbone_names()
    _check(known or (m.backbone.startswith("timm:") and len(m.backbone) > 5),
           f"model.backbone: unknown backbone {m.backbone!r}; expected a torchvision classification model "
           f"({', '.join(REFERENCE_BACKBONES)}, ...) or timm:<name>")
    _check(m.head_width >= 1, f"model.head_width must be >= 1, got {m.head_width}")
    _check(m.decoder_min_channels >= 0,
           f"model.decoder_min_channels must be >= 0, got {m.decoder_min_channels}")
    _check(d.input_size > 0 and d.input_size % 32 == 0,
           f"data.input_size must be a positive multiple of 32, got {d.input_size}")
    _check(d.workers >= 0, f"data.workers must be >= 0, got {d.workers}")
    crop = cfg.augment.crop_size
    _check(crop is None or (crop > 0 and crop % 32 == 0),
           f"augment.crop_size must be a positive multiple of 32 or null, got {crop}")
    on_objects = cfg.augment.crop_on_objects
    _check(math.isfinite(on_objects) and 0 <= on_objects <= 1,
           f"augment.crop_on_objects is a probability in [0, 1], got {on_objects}")
    tg = cfg.targets
    _check(tg.gaussian_shape in ("round", "box"),
           f"targets.gaussian_shape must be round or box, got {tg.gaussian_shape!r}")
    _check(_positive_number(tg.box_gaussian_scale),
           f"targets.box_gaussian_scale must be a positive number, got {tg.box_gaussian_scale}")
    for key in ("hm_weight", "wh_weight", "reg_weight", "cls_theta_weight", "probiou_weight",
                "angle_weight", "smooth_l1_beta"):
        value = getattr(cfg.loss, key)
        _check(math.isfinite(value) and value >= 0, f"loss.{key} must be a number >= 0, got {value}")
    _check(not cfg.loss.angle_probiou or m.angle_head,
           "loss.angle_probiou needs model.angle_head: without it there is no angle to decode the box with")
    radius = cfg.loss.regress_radius
    _check(isinstance(radius, int) and not isinstance(radius, bool) and 0 <= radius <= 3,
           f"loss.regress_radius must be an integer in 0..3, got {cfg.loss.regress_radius!r}")
    _check(cfg.loss.neighbour_weight in ("heatmap", "uniform", "aligned"),
           f"loss.neighbour_weight must be heatmap, uniform or aligned, got {cfg.loss.neighbour_weight!r}")
    _check(cfg.loss.neighbour_weight != "aligned" or cfg.loss.peak_assign == "aligned",
           "loss.neighbour_weight: aligned weighs each cell by how well it would serve as the peak: it "
           "needs loss.peak_assign: aligned (and so loss.regress_radius >= 1)")
    _check(cfg.loss.peak_assign in ("centre", "aligned"),
           f"loss.peak_assign must be centre or aligned, got {cfg.loss.peak_assign!r}")
    _check(cfg.loss.peak_assign == "centre" or radius >= 1,
           "loss.peak_assign: aligned chooses among the cells that learn the box: it needs "
           "loss.regress_radius >= 1")
    square = (2 * radius + 1) ** 2
    _check(isinstance(cfg.loss.peak_topk, int) and 1 <= cfg.loss.peak_topk <= square,
           f"loss.peak_topk must be an integer from 1 to the (2 * regress_radius + 1)^2 = {square} cells "
           f"of the square, got {cfg.loss.peak_topk!r}")
    _check(cfg.loss.peak_topk == 1 or cfg.loss.peak_assign == "aligned",
           "loss.peak_topk > 1 ranks the cells by their task alignment: it needs loss.peak_assign: aligned")
    _check(not (cfg.loss.hm_quality and cfg.loss.peak_assign == "aligned"),
           "loss.hm_quality reads the box quality at the centre cells, loss.peak_assign: aligned moves the "
           "peaks off them: use one of the two")
    _check(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    _check(t.base_batch_size >= 1, f"train.base_batch_size must be >= 1, got {t.base_batch_size}")
    _check(_positive_number(t.lr), f"train.lr must be a positive number, got {t.lr}")
    _check(math.isfinite(t.weight_decay) and t.weight_decay >= 0,
           f"train.weight_decay must be >= 0, got {t.weight_decay}")
    _check(t.optimizer.lower() in ("adam", "adamw"),
           f"train.optimizer must be adam or adamw, got {t.optimizer!r}")
    _check(t.schedule.lower() in ("cosine", "exponential", "constant"),
           f"train.schedule must be cosine, exponential or constant, got {t.schedule!r}")
    _check(math.isfinite(t.warmup_epochs) and t.warmup_epochs >= 0,
           f"train.warmup_epochs must be >= 0, got {t.warmup_epochs}")
    _check(math.isfinite(t.grad_clip) and t.grad_clip >= 0,
           f"train.grad_clip must be >= 0, got {t.grad_clip}")
    _check(0 <= t.ema_decay < 1, f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
    _check(math.isfinite(t.label_shift_at) and 0 <= t.label_shift_at < 1,
           f"train.label_shift_at must be in [0, 1), got {t.label_shift_at}")
    _check(t.label_shift_at == 0 or t.calibrate_centres,
           "train.label_shift_at needs train.calibrate_centres: the decoder must get the labels' offset back")
    _check(math.isfinite(t.whole_images_at) and 0 <= t.whole_images_at < 1,
           f"train.whole_images_at must be in [0, 1), got {t.whole_images_at}")
    _check(t.whole_images_at == 0 or cfg.augment.crop_size is not None,
           "train.whole_images_at needs augment.crop_size: without windows the run trains on whole images "
           "already")
    _check(t.calibration_images >= 1, f"train.calibration_images must be >= 1, got {t.calibration_images}")
    _check(len(cfg.augment.label_shift) == 2 and all(math.isfinite(v) for v in cfg.augment.label_shift),
           f"augment.label_shift must be two finite numbers (dx, dy), got {cfg.augment.label_shift}")
    _check(all(math.isfinite(v) for v in cfg.decode.centre_shift),
           f"decode.centre_shift must be two finite numbers (dx, dy), got {cfg.decode.centre_shift}")
    _check(t.amp.lower() in ("bf16", "fp16", "none"), f"train.amp must be bf16, fp16 or none, got {t.amp!r}")
    _check(t.val_every >= 1, f"train.val_every must be >= 1, got {t.val_every}")
    _check(t.max_nonfinite >= 1, f"train.max_nonfinite must be >= 1, got {t.max_nonfinite}")
    _check(t.time_budget is None or _positive_number(t.time_budget),
           f"train.time_budget (--time) must be a positive number of minutes, got {t.time_budget}")
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a Config from a (possibly partial) nested dict; missing keys take defaults."""
    model = data.get("model")
    if isinstance(model, dict) and "down_ratio" in model:  # a key of older configs and checkpoints
        if model["down_ratio"] != DOWN_RATIO:
            raise ConfigError(f"model.down_ratio: the heads come out at stride {DOWN_RATIO} whatever the "
                              f"trunk, got {model['down_ratio']!r} (remove the key)")
        data = {**data, "model": {k: v for k, v in model.items() if k != "down_ratio"}}
    return _from_dict(Config, data)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of built-in types (tuples become lists), safe for YAML and torch.save."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))  # type: ignore[no-any-return]


def load_config(path: str | Path | None = None) -> Config:
    """Read a YAML config file (None gives the defaults)."""
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Return a new Config with ``section.key=value`` overrides applied (YAML-parsed values)."""
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"override {item!r}: unknown section {p!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {parts[-1]!r}")
        node[parts[-1]] = value
    return config_from_dict(data)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the config as YAML, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
    tmp.replace(path)
