"""Our trunks under torchvision's Faster R-CNN (bbavectors.models.fpn): defaults, one training step and
inference on mixed sizes."""

from __future__ import annotations

import ast
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from cpu_threads import one_cpu_thread  # noqa: F401 (autouse: one intra-op thread)
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.ops import FrozenBatchNorm2d

from bbavectors.models import FPNBackbone, backbones, build_fpn_backbone, fpn


def test_fpn_backbone_defaults_are_resnet_fpn_backbone_s() -> None:
    # One entry point, one set of defaults: 3 trainable stages and FrozenBatchNorm2d.
    backbone = build_fpn_backbone("resnet18")
    assert backbone.out_channels == 256
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    trunk = backbone.body
    trainable = {trunk.stage_of_param[n] for n, p in trunk.body.named_parameters() if p.requires_grad}
    assert trainable == {2, 3, 4}


def test_fpn_backbone_outputs_like_resnet_fpn_backbone() -> None:
    backbone = build_fpn_backbone("resnet18", trainable_layers=5, frozen_bn=False)
    assert isinstance(backbone, FPNBackbone)
    assert backbone.out_channels == 256
    # Plain BN and a fully trainable trunk when asked for.
    assert any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(1, 3, 128, 96))
    assert isinstance(out, OrderedDict)
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape) for v in out.values()] == [
        (1, 256, 128 // s, 96 // s) for s in (4, 8, 16, 32)
    ] + [(1, 256, 2, 2)]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vgg16"])
def test_faster_rcnn_train_and_infer(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_fpn_backbone(name, trainable_layers=3, frozen_bn=True, out_channels=64)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules()) or name == "vgg16"
    assert any(not p.requires_grad for p in backbone.parameters())
    model = FasterRCNN(backbone, num_classes=3, min_size=128, max_size=160)
    images = [torch.rand(3, 120, 150), torch.rand(3, 100, 90)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0], [50.0, 40.0, 80.0, 90.0]]),
            "labels": torch.tensor([2, 1]),
        },
    ]
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert isinstance(total, torch.Tensor) and torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert all(p.grad is None for p in backbone.body.parameters() if not p.requires_grad)

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for det, image in zip(detections, images):
        assert set(det) == {"boxes", "labels", "scores"}
        boxes = det["boxes"]
        assert boxes.ndim == 2 and boxes.shape[1] == 4
        assert (boxes[:, 2] <= image.shape[2] + 1e-3).all() and (boxes[:, 3] <= image.shape[1] + 1e-3).all()


def test_regression_backbones_and_fpn_do_not_import_each_other_both_ways() -> None:
    # build_backbone(fpn=True) made backbones.py import detection.py, which imported backbones.py.
    def relative_imports(module: object) -> set[str]:
        tree = ast.parse(Path(str(getattr(module, "__file__", ""))).read_text(encoding="utf-8"))
        return {str(n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}

    assert "backbones" in relative_imports(fpn)
    assert relative_imports(backbones) == {"weights"}
    assert "fpn" not in backbones.build_backbone.__code__.co_varnames
