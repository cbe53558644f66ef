"""Trunks: channels and strides read from any torchvision classifier, weights from local files, freezing,
FrozenBN. Forwards run at 64 px: enough to prove strides and channels, cheap for heavy trunks."""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from cpu_threads import one_cpu_thread  # noqa: F401 (autouse: one intra-op thread)
from torch import nn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from bbavectors.models import (
    REFERENCE_BACKBONES,
    Backbone,
    backbones,
    build_backbone,
    save_backbone_weights,
    torchvision_backbone_names,
)
from bbavectors.models.backbones import convert_frozen_batchnorm


@functools.cache
def _shared_trunk(name: str) -> Backbone:
    """One random-init trunk per name for the tests that only read it (vgg16's init alone takes seconds)."""
    return build_backbone(name)


def _count(module: nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def _randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine terms, so that BN variants are told apart."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            mean, var, weight, bias = m.running_mean, m.running_var, m.weight, m.bias
            assert mean is not None and var is not None and weight is not None and bias is not None
            n = mean.numel()
            with torch.no_grad():
                mean.copy_(torch.randn(n, generator=g) * 0.1)
                var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                bias.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("resnet18", [64, 128, 256, 512]),
        ("mobilenet_v2", [24, 32, 96, 1280]),
        ("mobilenet_v3_large", [24, 40, 112, 960]),
        ("vgg16", [256, 512, 512, 512]),
        # Families outside the reference list: any torchvision classifier with stride 4..32 maps.
        ("efficientnet_b0", [24, 40, 112, 1280]),  # features[2], [3], [5], [8] (the last 1x1 conv)
        ("regnet_x_400mf", [32, 64, 160, 400]),  # trunk_output.block1..block4 (a Sequential, opened)
        ("convnext_tiny", [96, 192, 384, 768]),  # stem + stage at 4, then downsample + stage each
    ],
)
def test_channels_and_strides_come_from_the_trunk(name: str, channels: list[int]) -> None:
    backbone = _shared_trunk(name).eval()
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, 64, 96))
    assert backbone.strides == [4, 8, 16, 32]
    assert backbone.channels == channels
    assert [f.shape[1] for f in feats] == backbone.channels
    assert [(f.shape[2], f.shape[3]) for f in feats] == [(64 // s, 96 // s) for s in backbone.strides]


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "mnasnet0_5"])
def test_meta_device_dry_run_equals_the_real_one(name: str) -> None:
    # The fast path (shapes on the meta device) against the slow reference (the real model, on the CPU).
    fast = backbones._probe_on_meta(name)
    slow, error = backbones._probe(backbones._top_level_layers(torchvision.models.get_model(name).eval()))
    assert fast is not None and error is None
    assert fast == slow


def test_regnet_stages_follow_the_opened_sequential() -> None:
    # trunk_output is one Sequential spanning strides 4..32: its blocks become stages 1..4.
    backbone = build_backbone("regnet_x_400mf", trainable_layers=4)
    regnet = torchvision.models.regnet_x_400mf()
    assert _count(backbone, trainable=False) == _count(regnet.stem)
    backbone.set_trainable_layers(1)
    assert _count(backbone, trainable=True) == _count(regnet.trunk_output.block4)


@pytest.mark.parametrize("name", ["squeezenet1_1", "swin_t"])
def test_classifier_without_stride_maps_is_refused_by_name(name: str) -> None:
    # squeezenet's unpadded convs give 64 px -> 29, 14, 7 (no exact stride); swin's maps are (B, H, W, C).
    assert name in torchvision_backbone_names()
    with pytest.raises(ValueError, match=rf"backbone '{name}' has no feature map at stride"):
        build_backbone(name)


def test_resnet_channels_match_torchvision_attributes() -> None:
    # torchvision's own derivation (resnet_fpn_backbone): inplanes // 8 * 2**i.
    for name in ("resnet34", "resnet50"):
        with torch.device("meta"):  # only the attribute is read: no weights needed
            tv = torchvision.models.get_model(name)
        assert build_backbone(name).channels == [tv.inplanes // 8 * 2**i for i in range(4)]


def test_vgg_taps_are_before_the_maxpools() -> None:
    backbone = _shared_trunk("vgg16")
    body = backbone.body
    # stride 4, 8, 16 are the ReLUs before pools 3, 4, 5; stride 32 is pool 5 itself.
    modules = {n for n, _ in body.named_modules()}
    assert {"features.15", "features.22", "features.29", "features.30"} <= modules
    assert backbone.channels == [256, 512, 512, 512]


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError) as err:
        build_backbone("resnet9000")
    for name in REFERENCE_BACKBONES:
        assert name in str(err.value)
    assert "timm:" in str(err.value)


def test_timm_without_timm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[timm\]"'):
        build_backbone("timm:resnet18")


def test_timm_unknown_model() -> None:
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="unknown timm model"):
        build_backbone("timm:not_a_model_xyz")


def test_timm_picks_strides_from_feature_info() -> None:
    pytest.importorskip("timm")
    backbone = build_backbone("timm:efficientnet_b0").eval()
    info: Any = backbone.body.feature_info
    assert info.reduction() == [4, 8, 16, 32]
    assert backbone.channels == info.channels()
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, 64, 64))
    expected = [(c, 64 // s, 64 // s) for c, s in zip(backbone.channels, [4, 8, 16, 32])]
    assert [f.shape[1:] for f in feats] == expected


def test_imagenet_download_failure_suggests_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torchvision.models.get_model

    def offline(name: str, weights: object = None, **kwargs: object) -> nn.Module:
        if weights is not None:
            raise OSError("no network")
        return real(name, **kwargs)

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(RuntimeError, match="model.pretrained=/path/to/resnet18.pth") as err:
        build_backbone("resnet18", pretrained="imagenet")
    assert isinstance(err.value.__cause__, OSError)


# ------------------------------------------------------------------ freezing


def test_trainable_layers_match_torchvision_resnet_fpn_extractor() -> None:
    ours = build_backbone("resnet50")
    with torch.device("meta"):  # parameter counts only: no weights needed
        resnet50 = torchvision.models.resnet50()
    for k in range(6):
        ours.set_trainable_layers(k)
        tv = _resnet_fpn_extractor(copy.deepcopy(resnet50), trainable_layers=k)
        assert _count(ours, trainable=True) == _count(tv.body, trainable=True), k
        assert _count(ours) == _count(tv.body)
    assert _count(build_backbone("resnet50", trainable_layers=0), trainable=True) == 0
    with pytest.raises(ValueError):
        build_backbone("resnet18", trainable_layers=6)


def test_trainable_layers_mobilenet_v2_stages() -> None:
    # mobilenet_v2.features: 0-1 stem (stride 2), 2-3 stride 4, 4-6 stride 8, 7-13 stride 16, 14-18 stride 32.
    features = torchvision.models.mobilenet_v2().features
    stage_blocks = [range(0, 2), range(2, 4), range(4, 7), range(7, 14), range(14, 19)]
    per_stage = [sum(_count(features[i]) for i in blocks) for blocks in stage_blocks]
    backbone = build_backbone("mobilenet_v2")
    for k in range(6):
        backbone.set_trainable_layers(k)
        assert _count(backbone, trainable=True) == sum(per_stage[5 - k :]), k
        assert _count(backbone, trainable=False) == sum(per_stage[: 5 - k]), k


def test_trainable_layers_timm_resnet18_like_torchvision() -> None:
    pytest.importorskip("timm")
    ours = build_backbone("timm:resnet18", trainable_layers=3)
    tv = _resnet_fpn_extractor(torchvision.models.resnet18(), trainable_layers=3)
    assert _count(ours, trainable=True) == _count(tv.body, trainable=True)
    assert _count(ours, trainable=False) == _count(tv.body, trainable=False)


def test_frozen_bn_removes_exactly_the_bn_parameters() -> None:
    plain = build_backbone("resnet50")
    frozen = build_backbone("resnet50", frozen_bn=True)
    bn_params = sum(_count(m) for m in plain.modules() if isinstance(m, nn.BatchNorm2d))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == n_bn
    assert _count(frozen) == _count(plain) - bn_params
    assert _count(frozen, trainable=False) == 0  # trainable_layers=5: every remaining weight trains


def test_frozen_bn_keeps_each_layers_eps() -> None:
    backbone = build_backbone("mobilenet_v2", frozen_bn=True)
    eps = {m.eps for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)}
    assert eps == {nn.BatchNorm2d(1).eps}  # torchvision's mobilenet_v2 uses BN defaults
    v3 = build_backbone("mobilenet_v3_large", frozen_bn=True)
    assert {m.eps for m in v3.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.001}


def test_frozen_bn_trunk_equals_torchvision_frozen_resnet50() -> None:
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    _randomize_bn(tv)
    ours = build_backbone("resnet50", frozen_bn=True)
    result = ours.body.load_state_dict(tv.state_dict(), strict=False)
    assert result.missing_keys == [] and set(result.unexpected_keys) == {"fc.weight", "fc.bias"}
    x = torch.randn(2, 3, 64, 96)
    ours.eval()
    tv.eval()
    with torch.no_grad():
        feats = ours(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expected = []
        for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
            y = layer(y)
            expected.append(y)
    for f, e in zip(feats, expected):
        torch.testing.assert_close(f, e, rtol=1e-5, atol=1e-5)


def test_why_detector_trunks_use_frozen_bn() -> None:
    """FrozenBN = BN in eval mode (same eps); BN in train mode normalises with the batch instead."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8)
    _randomize_bn(bn)
    frozen = convert_frozen_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d)
    # The installed torchvision defaults FrozenBatchNorm2d.eps to 1e-5, like BatchNorm2d; older releases
    # used 0.0, which diverges from BN wherever running_var is tiny (shown at the end).
    assert FrozenBatchNorm2d(8).eps == bn.eps == 1e-5
    assert _count(frozen) == 0 and len(list(frozen.buffers())) == 4
    x = torch.randn(4, 8, 5, 5) * 3 + 1

    bn.eval()
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-5, atol=1e-5)
    frozen.train()  # train mode changes nothing for FrozenBN
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-5, atol=1e-5)

    running_mean = bn.running_mean
    assert running_mean is not None
    stats = running_mean.clone()
    bn.train()  # train mode: batch statistics, and the running statistics drift
    assert not torch.allclose(bn(x), frozen(x), atol=1e-2)
    assert not torch.equal(running_mean, stats)

    # The pre-1e-5 default: with tiny running_var, eps=0 and eps=1e-5 give visibly different outputs.
    tiny = FrozenBatchNorm2d(8, eps=0.0)
    tiny.load_state_dict(frozen.state_dict())
    tiny.running_var.fill_(1e-6)
    frozen.running_var.fill_(1e-6)
    assert not torch.allclose(tiny(x), frozen(x), rtol=1e-2)


# ------------------------------------------------------------------ weights from local files


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "timm:resnet18"])
def test_saved_trunk_loads_back_with_every_key(name: str, tmp_path: Path) -> None:
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    source = build_backbone(name)
    _randomize_bn(source)
    path = tmp_path / "trunk.pth"
    save_backbone_weights(source, path)
    loaded = build_backbone(name, pretrained=str(path), frozen_bn=True)
    report = loaded.weights_report
    assert report is not None and report.complete, report
    assert len(report.loaded) == len([k for k in source.body.state_dict() if "num_batches" not in k])
    source.eval()
    loaded.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(source(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_classifier_checkpoint_with_wrapper_prefixes(tmp_path: Path) -> None:
    tv = torchvision.models.resnet18()
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    backbone = build_backbone("resnet18", pretrained=str(tmp_path / "ckpt.pth"))
    report = backbone.weights_report
    assert report is not None and report.complete
    assert sorted(report.head) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(backbone.body.state_dict()["layer4.1.conv2.weight"], tv.layer4[1].conv2.weight)


def test_file_without_trunk_keys_raises(tmp_path: Path) -> None:
    torch.save({"decoder.conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no key matches the trunk"):
        build_backbone("resnet18", pretrained=str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError):
        build_backbone("resnet18", pretrained=str(tmp_path / "absent.pth"))


def test_backbone_type() -> None:
    assert isinstance(build_backbone("resnet18"), Backbone)
