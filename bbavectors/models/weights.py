"""Trunk weights: torchvision's ImageNet weight enums when online, a local state-dict file always.

``pretrained`` (the ``--pretrained`` flag, ``model.pretrained`` in a config) takes three forms:

* ``None``: random init;
* ``"imagenet"``: torchvision's ``DEFAULT`` weight enum of the classifier (timm trunks: timm's own
  pretrained weights); needs network or a filled torch hub cache, and a failed download says to pass
  a file instead;
* a path to a local ``.pth`` file, which always works offline (:func:`load_weights`).

A file is loaded into the torchvision classifier *before* it is cut into a feature extractor, so it
uses torchvision's key names (``layer1.0.conv1.weight``, ``features.0.0.weight``);
:func:`save_backbone_weights` writes exactly those names, so its files load back with every key matched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torchvision
from torch import Tensor, nn

from ..checkpoint import load_untrusted, write_torch_file

if TYPE_CHECKING:
    from .backbones import Backbone

__all__ = [
    "IMAGENET",
    "WeightsReport",
    "load_weights",
    "read_state_dict",
    "save_backbone_weights",
    "torchvision_classifier",
]

logger = logging.getLogger(__name__)

#: The ``pretrained`` value that asks for the library's ImageNet weights.
IMAGENET = "imagenet"
#: Prefixes that wrappers add to trunk keys (DataParallel, torch.compile, detectors, the original
#: BBAVectors ``base_network``, our own ``CTRBOX.backbone.body``); stripped when reading a file.
_KEY_PREFIXES = ("module.", "_orig_mod.", "backbone.", "body.", "base_network.", "encoder.")


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


def torchvision_classifier(name: str, pretrained: str | None) -> nn.Module:
    """The torchvision classifier ``name``, with its ``DEFAULT`` ImageNet weights for ``"imagenet"``.

    Any other ``pretrained`` (None or a file, which :func:`load_weights` reads later) gives random init.
    """
    if pretrained != IMAGENET:
        return torchvision.models.get_model(name, weights=None)
    weights = torchvision.models.get_model_weights(name).DEFAULT  # type: ignore[attr-defined]
    try:
        return torchvision.models.get_model(name, weights=weights)
    except Exception as e:  # download errors come in many types (URLError, OSError, HTTPError...)
        raise RuntimeError(
            f"could not get torchvision's ImageNet weights {weights} for {name}: {e}. Without network, "
            f"pass a local state dict instead: model.pretrained=/path/to/{name}.pth"
        ) from e


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
            f"pretrained weights not found: {path} (expected None, '{IMAGENET}' or a local .pth file)"
        )
    obj: Any = load_untrusted(path, "cpu", what="weight file")
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


def load_weights(model: nn.Module, path: str | Path, trunk_keys: Iterable[str]) -> WeightsReport:
    """Load a weight file into ``model`` (strict=False) and report it; raise if no trunk key matched.

    Args:
        model: the classifier (or timm feature model) whose ``state_dict`` names the file must use.
        path: a local state-dict file (:func:`read_state_dict`).
        trunk_keys: the keys of ``model`` that belong to the trunk; others are the classifier's head.
    """
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
    """Save the trunk's weights under the classifier's key names; ``pretrained=path`` loads them back.

    Written atomically and durably, as a checkpoint (:func:`bbavectors.checkpoint.write_torch_file`).
    """
    path = Path(path)
    write_torch_file(backbone.body.state_dict(), path)
