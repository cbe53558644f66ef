"""CTRBOX: head shapes for every reference trunk (small inputs) and at 608x608 / 600x800, the original's
size, logits, padding, the fixed output stride."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from cpu_threads import one_cpu_thread  # noqa: F401 (autouse: one intra-op thread)
from torch import nn
from torch.nn import functional as F

from bbavectors.checkpoint import model_from_checkpoint, save_checkpoint
from bbavectors.config import (
    DOWN_RATIO,
    Config,
    ConfigError,
    ModelConfig,
    config_from_dict,
    config_to_dict,
    validate_config,
)
from bbavectors.models import (
    CTRBOX,
    REFERENCE_BACKBONES,
    CombinationModule,
    Decoder,
    Heads,
    build_backbone,
    build_model,
)
from bbavectors.models.complexity import model_complexity

TIMM_TRUNKS = ["timm:resnet18", "timm:efficientnet_b0"]


def _model(backbone: str, head_width: int = 32, num_classes: int = 15) -> CTRBOX:
    return build_model(Config(model=ModelConfig(backbone=backbone, head_width=head_width)), num_classes)


def _assert_head_shapes(model: CTRBOX, sizes: list[tuple[tuple[int, int], tuple[int, int]]]) -> None:
    for (h, w), (oh, ow) in sizes:
        with torch.no_grad():
            out = model(torch.randn(2, 3, h, w))
        assert list(out) == ["hm", "wh", "reg", "cls_theta"]
        assert out["hm"].shape == (2, 15, oh, ow)
        assert out["wh"].shape == (2, 10, oh, ow)
        assert out["reg"].shape == (2, 2, oh, ow)
        assert out["cls_theta"].shape == (2, 1, oh, ow)
        assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("name", list(REFERENCE_BACKBONES) + TIMM_TRUNKS)
def test_head_shapes_for_every_trunk(name: str) -> None:
    # Small inputs: strides and channels are proven at 64 px; 72x100 is padded to 96x128 and cropped.
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = _model(name).eval()
    assert model.decoder.out_channels == model.backbone.channels[0]
    _assert_head_shapes(model, [((64, 64), (16, 16)), ((72, 100), (18, 25))])


def test_head_shapes_at_the_original_sizes() -> None:
    torch.manual_seed(0)
    start = time.perf_counter()
    _assert_head_shapes(_model("resnet18").eval(), [((608, 608), (152, 152)), ((600, 800), (150, 200))])
    print(f"resnet18 608x608 + 600x800: {time.perf_counter() - start:.2f}s")


def test_resnet101_matches_the_original_parameter_count() -> None:
    model = _model("resnet101", head_width=256, num_classes=15)
    params = sum(p.numel() for p in model.parameters())
    assert params == pytest.approx(72.42e6, rel=0.01)
    # Decoder and heads exactly as the original's (resnet101 trunk without fc: 42.50M).
    assert sum(p.numel() for p in model.decoder.parameters()) == 27_535_872
    assert sum(p.numel() for p in model.heads.parameters()) == 2_387_996


def test_outputs_are_logits_with_hm_prior_bias() -> None:
    heads = Heads(in_channels=8, num_classes=3, head_width=4)
    last = heads.hm[-1]
    assert isinstance(last, nn.Conv2d) and last.bias is not None
    assert torch.allclose(last.bias, torch.full((3,), -2.19))
    # No sigmoid anywhere: with the hidden layer silenced, the hm outputs are exactly the bias.
    with torch.no_grad():
        first = heads.hm[0]
        assert isinstance(first, nn.Conv2d) and first.bias is not None
        first.bias.zero_()
        out = heads(torch.zeros(1, 8, 5, 5))
    torch.testing.assert_close(out["hm"], torch.full((1, 3, 5, 5), -2.19))
    assert not any(isinstance(m, nn.Sigmoid) for m in heads.modules())


def test_padding_keeps_the_grid_anchored_top_left() -> None:
    torch.manual_seed(0)
    model = _model("resnet18", head_width=8, num_classes=2).eval()
    x = torch.randn(1, 3, 70, 97)
    padded = F.pad(x, (0, 128 - 97, 0, 96 - 70))
    with torch.no_grad():
        out = model(x)
        ref = model(padded)
    for key in out:
        assert out[key].shape[-2:] == (18, 25)  # ceil(70/4), ceil(97/4)
        torch.testing.assert_close(out[key], ref[key][..., :18, :25])


def test_combination_module_handles_odd_sizes() -> None:
    module = CombinationModule(c_low=16, c_up=8).eval()
    with torch.no_grad():
        out = module(torch.randn(1, 16, 5, 7), torch.randn(1, 8, 9, 13))
    assert out.shape == (1, 8, 9, 13)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    layout = [(c.in_channels, c.out_channels, c.kernel_size) for c in convs]
    assert layout == [(16, 8, (3, 3)), (16, 8, (1, 1))]


def test_decoder_takes_channels_from_the_backbone() -> None:
    backbone = build_backbone("mobilenet_v2")
    decoder = Decoder(backbone.channels)
    assert decoder.out_channels == backbone.channels[0] == 24
    with pytest.raises(ValueError):
        Decoder([1, 2, 3])


def test_decoder_min_channels_widens_only_the_thin_maps() -> None:
    # regnet_x_400mf: 32 / 64 / 160 / 400 channels at strides 4 / 8 / 16 / 32.
    decoder = Decoder([32, 64, 160, 400], min_channels=64)
    assert decoder.out_channels == 64
    assert decoder.dec_c4.out_channels == 160 and decoder.dec_c3.out_channels == 64
    convs = [(c.in_channels, c.out_channels) for c in decoder.dec_c2.modules() if isinstance(c, nn.Conv2d)]
    # conv3x3 from the stride-8 map to 64, then conv1x1 over the 32 skip channels + those 64.
    assert convs == [(64, 64), (96, 64)]
    feats = [torch.randn(1, c, 32 // s, 32 // s) for c, s in zip((32, 64, 160, 400), (1, 2, 4, 8))]
    with torch.no_grad():
        assert decoder.eval()(feats).shape == (1, 64, 32, 32)
    # 0 (the default) and a floor under every width change nothing.
    for floor in (0, 32):
        same = Decoder([32, 64, 160, 400], min_channels=floor)
        assert sum(p.numel() for p in same.parameters()) == sum(
            p.numel() for p in Decoder([32, 64, 160, 400]).parameters())
    with pytest.raises(ValueError, match="min_channels"):
        Decoder([32, 64, 160, 400], min_channels=-1)


def test_model_decoder_min_channels_reaches_the_heads() -> None:
    cfg = Config(model=ModelConfig(backbone="mobilenet_v2", head_width=16, decoder_min_channels=48))
    model = build_model(cfg, 2)
    assert model.decoder.out_channels == 48
    first = model.heads.hm[0]
    assert isinstance(first, nn.Conv2d) and first.in_channels == 48
    with pytest.raises(ConfigError, match="decoder_min_channels"):
        validate_config(config_from_dict({"model": {"decoder_min_channels": -2}}))


def test_regression_down_ratio_is_one_constant_not_a_setting() -> None:
    # It was a config field that accepted one value; now the model and the config read DOWN_RATIO.
    assert DOWN_RATIO == 4 and Config().model.down_ratio == DOWN_RATIO
    assert "down_ratio" not in config_to_dict(Config())["model"]
    assert _model("resnet18", head_width=8).down_ratio == DOWN_RATIO
    with pytest.raises(ValueError, match="stride 4"):
        config_from_dict({"model": {"backbone": "resnet18", "down_ratio": 8}})
    with pytest.raises(ConfigError, match="stride 4"):
        config_from_dict({"model": {"down_ratio": 2}})


def test_regression_old_checkpoint_with_down_ratio_key_loads(tmp_path: Path) -> None:
    cfg = Config(model=ModelConfig(backbone="resnet18", head_width=8))
    model = build_model(cfg, 2)
    path = tmp_path / "old.pt"
    save_checkpoint(path, model, cfg, ["a", "b"])
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["model"]["down_ratio"] = 4  # what checkpoints written before the change hold
    torch.save(ckpt, path)
    loaded, loaded_cfg, classes = model_from_checkpoint(path)
    assert loaded_cfg == cfg and classes == ["a", "b"] and loaded_cfg.model.down_ratio == 4
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_model_complexity_counts_conv_flops() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    params, flops = model_complexity(conv, (10, 12))
    assert params == 3 * 8 * 9 + 8
    assert flops == 2 * (3 * 9) * 8 * 10 * 12  # one multiply-add = 2 FLOPs
    assert conv.weight.device.type == "cpu"  # the model itself stays where it was
