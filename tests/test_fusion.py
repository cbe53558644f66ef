"""Batch-norm folding for inference (bbavectors.models.fusion) and the inference precision modes.

Folding must not change what the model computes: every check compares the folded copy's outputs
with the eval-mode original's, on batch norms given non-trivial statistics (fresh ones are an
identity map, which would hide a wrong formula).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, fx, nn
from torchvision.ops import FrozenBatchNorm2d

import bbavectors.runtime as runtime_module
from bbavectors.config import Config, ModelConfig
from bbavectors.inference.predictor import Predictor
from bbavectors.models.builder import build_model
from bbavectors.models.fusion import count_batch_norms, fuse_conv_bn
from bbavectors.runtime import resolve_inference_amp


def _randomise_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.running_mean.numel()
                m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


def _assert_same_outputs(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("backbone", ["resnet18", "regnet_x_400mf", "mobilenet_v2"])
def test_ctrbox_folded_computes_the_same_and_keeps_no_batch_norm(backbone: str) -> None:
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone=backbone, head_width=16))
    model = _randomise_batch_norms(build_model(cfg, 2))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = count_batch_norms(model)
    fused = fuse_conv_bn(model)
    # Every conv -> BN pair of the torchvision trunk (FX graph) and the decoder (Sequential) folds.
    assert norms > 0 and count_batch_norms(fused) == 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _assert_same_outputs(fused(x), model(x))
    # The original is untouched.
    assert count_batch_norms(model) == norms
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not fused.training


def test_original_training_mode_is_kept() -> None:
    model = build_model(Config(model=ModelConfig(backbone="resnet18", head_width=16)), 1).train()
    fuse_conv_bn(model)
    assert model.training and all(m.training for m in model.modules())


def test_sequential_conv_bn_folds_but_conv_relu_bn_does_not() -> None:
    torch.manual_seed(0)
    folds = _randomise_batch_norms(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()))
    keeps = _randomise_batch_norms(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4)))
    x = torch.randn(1, 3, 8, 8)
    for model, left in ((folds, 0), (keeps, 1)):
        fused = fuse_conv_bn(model)
        assert count_batch_norms(fused) == left
        with torch.no_grad():
            torch.testing.assert_close(fused(x), model.eval()(x), rtol=1e-4, atol=1e-5)


def test_frozen_batch_norm_and_bias_free_conv_fold_by_hand_values() -> None:
    conv = nn.Conv2d(1, 1, 1, bias=False)
    bn = FrozenBatchNorm2d(1, eps=0.0)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(4.0)
        bn.weight.fill_(3.0)
        bn.bias.fill_(0.5)
    fused = fuse_conv_bn(nn.Sequential(conv, bn))
    folded = fused[0]
    assert isinstance(folded, nn.Conv2d) and isinstance(fused[1], nn.Identity)
    # y = (2x - 1) / 2 * 3 + 0.5 = 3x - 1
    assert folded.weight.item() == pytest.approx(3.0)
    assert folded.bias is not None and folded.bias.item() == pytest.approx(-1.0)


class _ConvUsedTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        # conv's output also skips the batch norm: folding it would change the residual.
        z = self.bn(y) + y
        return self.bn2(self.conv2(z))


def test_graph_module_folds_only_single_use_chains() -> None:
    torch.manual_seed(0)
    gm = fx.symbolic_trace(_randomise_batch_norms(_ConvUsedTwice()))
    fused = fuse_conv_bn(gm)
    assert isinstance(fused.get_submodule("bn"), nn.BatchNorm2d)
    assert isinstance(fused.get_submodule("bn2"), nn.Identity)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), gm.eval()(x), rtol=1e-4, atol=1e-5)


def test_predictor_folds_a_copy_and_predicts_the_same() -> None:
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="resnet18", head_width=16))
    cfg.data.input_size = 64
    cfg.decode.score_thresh = 0.0
    model = _randomise_batch_norms(build_model(cfg, 2))
    norms = count_batch_norms(model)
    image = np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    folded = Predictor(model, cfg, ("a", "b"), device="cpu")
    plain = Predictor(model, cfg, ("a", "b"), device="cpu", fuse_batch_norm=False, channels_last=False)
    assert folded.channels_last and folded.num_parameters == plain.num_parameters
    assert count_batch_norms(model) == norms
    a, b = folded.predict_images([image])[0], plain.predict_images([image])[0]
    assert len(a["scores"]) == len(b["scores"]) > 0
    torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["polygons"], b["polygons"], rtol=1e-4, atol=1e-3)


def test_inference_amp_auto_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime_module, "cpu_has_bf16", lambda: True)
    assert resolve_inference_amp("auto", cpu) == torch.bfloat16
    assert resolve_inference_amp("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(runtime_module, "cpu_has_bf16", lambda: False)
    assert resolve_inference_amp("auto", cpu) is None
    # Emulated bf16 is slower than float32: asked for, it falls back.
    assert resolve_inference_amp("bf16", cpu) is None
    assert resolve_inference_amp("none", cpu) is None
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_inference_amp("int8", cpu)


def test_predictor_amp_dtype_and_bad_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config(model=ModelConfig(backbone="resnet18", head_width=16))
    model = build_model(cfg, 1)
    monkeypatch.setattr(runtime_module, "cpu_has_bf16", lambda: True)
    assert Predictor(model, cfg, ("a",), device="cpu", amp="auto").amp_dtype == torch.bfloat16
    assert Predictor(model, cfg, ("a",), device="cpu").amp_dtype is None
    with pytest.raises(ValueError, match="amp must be one of"):
        Predictor(model, cfg, ("a",), device="cpu", amp="half")
