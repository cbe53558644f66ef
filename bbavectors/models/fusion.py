"""Fold batch norms into the convolutions before them, for inference.

In eval mode a batch norm is a fixed per-channel affine map, ``y = (x - mean) / sqrt(var + eps) *
gamma + beta``, so a convolution followed by one equals a single convolution with rescaled weights
and a new bias. Folding them removes one pass over every feature map: on a 2-core CPU the
regnet_x_400mf model at 512 px ran 1.2x faster in float32 with channels-last (model only; 1.07x for
letterbox + model + decode, docs/inference.md "CPU defaults").

:func:`fuse_conv_bn` folds every pair it can prove is a plain ``conv -> bn`` chain:

- inside a torch.fx ``GraphModule`` (torchvision trunks are feature-extractor graph modules), a
  ``Conv2d`` node whose only user is a ``BatchNorm2d`` / ``FrozenBatchNorm2d`` node, each module
  called from that one node only;
- inside an ``nn.Sequential`` that runs its own forward (the decoder's conv blocks, or a block a
  graph calls as a whole, like regnet's ``ConvNormActivation``), a ``Conv2d`` child directly
  followed by a batch-norm child.

Anything else (timm's non-FX trunks, a batch norm in training mode or without running statistics)
is left as it is: folding is an optimisation, the model's output is the same either way (up to
float rounding, ~1e-6 relative).

Example::

    fused = fuse_conv_bn(model)        # a folded eval-mode copy; ``model`` is not changed
    torch.testing.assert_close(fused(x)["hm"], model.eval()(x)["hm"], rtol=1e-4, atol=1e-4)
"""

from __future__ import annotations

import copy
import logging
from collections import Counter

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["fuse_conv_bn", "count_batch_norms"]

logger = logging.getLogger(__name__)

_BatchNorm = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, _BatchNorm):
        return False
    mean, var = _tensor(bn, "running_mean"), _tensor(bn, "running_var")
    if mean is None or var is None or mean.numel() != conv.out_channels:
        return False
    # A training-mode BatchNorm2d normalises with the batch's statistics: not a fixed map.
    return not (isinstance(bn, nn.BatchNorm2d) and bn.training)


def _tensor(module: nn.Module, name: str) -> Tensor | None:
    value = getattr(module, name, None)
    return value if isinstance(value, Tensor) else None


def _folded(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    fused = copy.deepcopy(conv)
    mean, var = _tensor(bn, "running_mean"), _tensor(bn, "running_var")
    assert mean is not None and var is not None
    weight, bias = _tensor(bn, "weight"), _tensor(bn, "bias")
    eps = getattr(bn, "eps", 1e-5)
    fused_w, fused_b = fuse_conv_bn_weights(conv.weight, conv.bias, mean, var, float(eps),
                                            weight if weight is not None else torch.ones_like(var),
                                            bias if bias is not None else torch.zeros_like(mean))
    fused.weight, fused.bias = fused_w, fused_b
    return fused.requires_grad_(False)


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, module)


def _fuse_graph_module(gm: fx.GraphModule) -> int:
    """Fold in place; the graph is left as it is (the batch norm becomes an identity module)."""
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    fused = 0
    for node in gm.graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        conv_node = node.args[0]
        if (conv_node.op != "call_module" or len(conv_node.users) != 1 or len(node.args) != 1 or node.kwargs
                or calls[node.target] != 1 or calls[conv_node.target] != 1):
            continue
        conv = gm.get_submodule(str(conv_node.target))
        bn = gm.get_submodule(str(node.target))
        if not _foldable(conv, bn):
            continue
        assert isinstance(conv, nn.Conv2d)
        _set_submodule(gm, str(conv_node.target), _folded(conv, bn))
        _set_submodule(gm, str(node.target), nn.Identity())
        fused += 1
    # Modules the graph calls as a whole (e.g. torchvision's ConvNormActivation, traced as a leaf)
    # run their own forward: the Sequential rule holds inside them.
    for target in calls:
        leaf = gm.get_submodule(str(target))
        if not isinstance(leaf, (nn.Conv2d, *_BatchNorm, nn.Identity)):
            fused += _fuse_sequentials(leaf)
    return fused


def _fuse_sequentials(module: nn.Module) -> int:
    if isinstance(module, fx.GraphModule):
        return _fuse_graph_module(module)
    fused = sum(_fuse_sequentials(child) for child in module.children())
    if isinstance(module, nn.Sequential):
        children = list(module)
        for i in range(len(children) - 1):
            conv, bn = children[i], children[i + 1]
            if _foldable(conv, bn):
                assert isinstance(conv, nn.Conv2d)
                module[i] = _folded(conv, bn)
                module[i + 1] = nn.Identity()
                fused += 1
    return fused


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each provable ``conv -> batch norm`` pair folded into the conv.

    For inference only: the copy's batch norms are gone, so training it would train a different
    network. ``model`` itself is not changed. Outputs equal the eval-mode model's up to float rounding.
    """
    fused_model = copy.deepcopy(model)
    # Deep copies of torchvision's feature-extractor graph modules come back in training mode.
    fused_model.eval()
    with torch.no_grad():
        fused = _fuse_sequentials(fused_model)
    logger.debug("folded %d batch norm(s) into their convolutions; %d left", fused,
                 count_batch_norms(fused_model))
    return fused_model.eval()


def count_batch_norms(model: nn.Module) -> int:
    """How many ``BatchNorm2d`` / ``FrozenBatchNorm2d`` modules ``model`` still holds."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())
