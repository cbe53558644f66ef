"""The aligned output grid (``model.align_grid``): corner-aligned upsampling in the decoder, and
targets / decoding whose cell ``j`` covers input pixels ``[4 j - 1.5, 4 j + 2.5)``.

Hand-derived values for the upsampling and the encoder, the receptive-field claim measured on a
real trunk, a round trip with the offset (and its failure when the decoder forgets it), and the
wiring: config -> model -> trainer targets, predictor, export wrapper.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cpu_threads import one_cpu_thread  # noqa: F401 (autouse: one intra-op thread)
from test_train_engine import make_tiny_dataset, tiny_config
from torch import nn
from torch.nn import functional as F

from bbavectors.config import Config, ModelConfig, TargetConfig, config_from_dict, config_to_dict
from bbavectors.decode import decode_detections, decode_topk
from bbavectors.engine.distributed import DistInfo
from bbavectors.engine.trainer import Trainer
from bbavectors.export.onnx_export import ExportWrapper
from bbavectors.inference.predictor import Predictor
from bbavectors.models import CombinationModule, build_model
from bbavectors.models.decoder import upsample_corner_aligned
from bbavectors.roundtrip import roundtrip_polygons
from bbavectors.targets import encode_targets
from DOTA_devkit.geometry import obb_to_poly, poly_iou

OFFSET = 1.5  # (down_ratio - 1) / 2


def _square(cx: float, cy: float, side: float = 8.0) -> torch.Tensor:
    h = side / 2
    corners = [cx - h, cy - h, cx + h, cy - h, cx + h, cy + h, cx - h, cy + h]
    return torch.tensor([corners], dtype=torch.float64)


def _encode(polys: torch.Tensor, size: int, grid_offset: float) -> dict[str, torch.Tensor]:
    n = polys.shape[0]
    zeros = torch.zeros(n, dtype=torch.long)
    return encode_targets([polys], [zeros], [zeros], 1, (size, size), TargetConfig(), grid_offset=grid_offset)


# ------------------------------------------------------------------------------ the upsampling
def test_upsample_corner_aligned_hand_values() -> None:
    x = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]])
    # Output j reads input j / 2; the last row / column repeats the edge.
    expected = torch.tensor([[[[0.0, 1.0, 2.0, 2.0], [2.0, 3.0, 4.0, 4.0], [4.0, 5.0, 6.0, 6.0],
                               [4.0, 5.0, 6.0, 6.0]]]])
    torch.testing.assert_close(upsample_corner_aligned(x, (4, 4)), expected)
    torch.testing.assert_close(upsample_corner_aligned(x, (3, 4)), expected[..., :3, :])
    with pytest.raises(ValueError, match="2x"):
        upsample_corner_aligned(x, (5, 4))


@pytest.mark.parametrize("stride", [8, 16, 32])
def test_upsampling_keeps_the_trunks_sampling_positions(stride: int) -> None:
    # A stride-s map whose cell k holds the input pixel it is centred on (s k, as strided convs with
    # padding k // 2 sample) must become a stride-s/2 map holding s/2 j: the same pixel grid.
    n = 6
    k = torch.arange(n, dtype=torch.float32)
    level = (stride * k).view(1, 1, 1, n).expand(1, 1, n, n)
    j = torch.arange(2 * n - 1, dtype=torch.float32)
    aligned = upsample_corner_aligned(level, (2 * n, 2 * n))[0, 0, 0, : 2 * n - 1]
    torch.testing.assert_close(aligned, stride / 2 * j)
    # The original resize reads j / 2 - 1/4: a quarter of the deeper cell up / left (interior cells).
    legacy = F.interpolate(level, size=(2 * n, 2 * n), mode="bilinear", align_corners=False)[0, 0, 0, 1:-1]
    interior = torch.arange(1, 2 * n - 1, dtype=torch.float32)
    torch.testing.assert_close(legacy, stride / 2 * interior - stride / 4)


def test_aligned_model_centres_each_output_cell_on_input_pixel_4j() -> None:
    # Every conv weight constant: the network is symmetric about each cell's sampling point, so the
    # centroid of d hm[j, j] / d input is where the cell looks. 768 px keeps the deep receptive
    # fields off the image border.
    def centroid(align: bool, size: int = 768, j: int = 96) -> float:
        cfg = Config(model=ModelConfig(backbone="regnet_x_400mf", head_width=8, align_grid=align))
        model = build_model(cfg, 1).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.fill_(1.0 / m.weight[0].numel())
                    if m.bias is not None:
                        m.bias.zero_()
        x = torch.ones(1, 3, size, size, requires_grad=True)
        (grad,) = torch.autograd.grad(model(x)["hm"][0, 0, j, j], x)
        weight = grad.abs().sum(dim=(0, 1)).sum(dim=0)
        return float((weight * torch.arange(size)).sum() / weight.sum())

    assert centroid(True) == pytest.approx(4 * 96, abs=0.01)
    # The original decoder's cells look several pixels up / left of 4j (its deep features most).
    assert centroid(False) < 4 * 96 - 5


def test_combination_module_corner_aligned_handles_odd_sizes() -> None:
    module = CombinationModule(c_low=16, c_up=8, corner_aligned=True).eval()
    with torch.no_grad():
        out = module(torch.randn(1, 16, 5, 7), torch.randn(1, 8, 9, 13))
    assert out.shape == (1, 8, 9, 13)


# ------------------------------------------------------------------------------ the targets
def test_grid_offset_targets_hand_values() -> None:
    # size 64 -> 16 x 16 cells. Centre (10, 7): (10 + 1.5) / 4 = 2.875, (7 + 1.5) / 4 = 2.125.
    t = _encode(_square(10.0, 7.0), 64, OFFSET)
    assert int(t["ind"][0, 0]) == 2 * 16 + 2
    torch.testing.assert_close(t["reg"][0, 0], torch.tensor([0.875, 0.125]))
    assert float(t["hm"][0, 0, 2, 2]) == 1.0
    # The original grid: 10 / 4 = 2.5, 7 / 4 = 1.75 -> cell (2, 1).
    t0 = _encode(_square(10.0, 7.0), 64, 0.0)
    assert int(t0["ind"][0, 0]) == 1 * 16 + 2
    torch.testing.assert_close(t0["reg"][0, 0], torch.tensor([0.5, 0.75]))
    # docs/model.md's worked example: 43.5 -> cell 11, reg 0.25 (the original: cell 10, reg 0.875).
    t, t0 = _encode(_square(43.5, 43.5), 64, OFFSET), _encode(_square(43.5, 43.5), 64, 0.0)
    assert int(t["ind"][0, 0]) == 11 * 16 + 11 and int(t0["ind"][0, 0]) == 10 * 16 + 10
    torch.testing.assert_close(t["reg"][0, 0], torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(t0["reg"][0, 0], torch.tensor([0.875, 0.875]))
    # A centre in the last 1.5 px of the map keeps the last cell: (63 + 1.5) / 4 - 15 = 1.125.
    t = _encode(_square(63.0, 63.0), 64, OFFSET)
    assert int(t["ind"][0, 0]) == 15 * 16 + 15 and bool(t["mask"][0, 0])
    torch.testing.assert_close(t["reg"][0, 0], torch.tensor([1.125, 1.125]))
    # A centre outside the map is still an ignore region, offset or not.
    t = _encode(_square(64.5, 20.0), 64, OFFSET)
    assert not bool(t["mask"][0, 0]) and int(t["num_ignored"][0]) == 1


def _boxes(n: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    long = rng.uniform(8, 60, n)
    obb = np.stack([np.zeros(n), np.zeros(n), long, long / rng.uniform(1, 4, n), rng.uniform(0, np.pi, n)], 1)
    return obb_to_poly(obb)


def test_roundtrip_with_the_grid_offset() -> None:
    polys = _boxes()
    cfg = replace(TargetConfig(), min_size=0.5)
    decoded, _ = roundtrip_polygons(polys, cfg, grid_offset=OFFSET)
    assert not np.isnan(decoded).any()
    assert poly_iou(decoded, polys).min() >= 0.98


def test_roundtrip_fails_when_the_decoder_forgets_the_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    import bbavectors.roundtrip as roundtrip_mod

    def forgetful(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kwargs["grid_offset"] = 0.0
        return decode_topk(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(roundtrip_mod, "decode_topk", forgetful)
    polys = _boxes()
    cfg = replace(TargetConfig(), min_size=0.5)
    decoded, _ = roundtrip_polygons(polys, cfg, grid_offset=OFFSET, retries=0)
    # Every box comes back 1.5 px right and down: small boxes fall below the round trip's 0.98.
    assert np.nanmin(poly_iou(np.nan_to_num(decoded), polys)) < 0.9


# ------------------------------------------------------------------------------ the wiring
def test_config_builds_the_aligned_model_and_old_configs_keep_the_original() -> None:
    cfg = Config(model=ModelConfig(backbone="resnet18", head_width=8, align_grid=True))
    assert cfg.model.grid_offset == OFFSET
    model = build_model(cfg, 2)
    modules = [m for m in model.modules() if isinstance(m, CombinationModule)]
    assert model.grid_offset == OFFSET and len(modules) == 3 and all(m.corner_aligned for m in modules)
    again = config_from_dict(config_to_dict(cfg))
    assert again.model.align_grid and again.model.grid_offset == OFFSET
    # A config saved before the key existed (every older checkpoint) rebuilds the original model.
    old = config_to_dict(Config())
    del old["model"]["align_grid"]
    legacy = build_model(config_from_dict(old), 2)
    assert legacy.grid_offset == 0.0
    assert not any(m.corner_aligned for m in legacy.modules() if isinstance(m, CombinationModule))


def _aligned_resnet18() -> tuple[nn.Module, Config]:
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="resnet18", head_width=8, align_grid=True))
    cfg.data.input_size = 64
    cfg.decode.top_k = 20
    cfg.decode.score_thresh = 0.0
    cfg.decode.nms_thresh = 0.0
    return build_model(cfg, 1).eval(), cfg


def test_predictor_and_export_wrapper_decode_with_the_models_offset() -> None:
    model, cfg = _aligned_resnet18()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    predictor = Predictor(model, cfg, ["ship"], device="cpu")
    outputs = predictor.forward(images)
    got = predictor.decode(outputs)
    want = decode_detections(outputs, predictor.decode_cfg, grid_offset=OFFSET)
    unshifted = decode_detections(outputs, predictor.decode_cfg, grid_offset=0.0)
    for g, w, u in zip(got, want, unshifted):
        torch.testing.assert_close(g["polygons"], w["polygons"])
        # The offset moves every box 1.5 px up and left, nothing else.
        torch.testing.assert_close(g["polygons"], u["polygons"] - OFFSET)
    wrapper = ExportWrapper(model, top_k=cfg.decode.top_k, mean=cfg.data.mean, std=cfg.data.std).eval()
    assert wrapper.grid_offset == OFFSET
    with torch.no_grad():
        polygons, _, _ = wrapper(images)
    top, _, _ = decode_topk(outputs, cfg.decode.top_k, cfg.decode.cls_theta_thresh, grid_offset=OFFSET)
    torch.testing.assert_close(polygons, top, atol=1e-4, rtol=1e-5)


def test_trainer_encodes_targets_on_the_aligned_grid(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", num_images=4)
    trainer = Trainer(tiny_config(data, "model.align_grid=true"), tmp_path / "run", dist_info=DistInfo(),
                      progress=False, threads=1)
    try:
        assert trainer.cfg.model.grid_offset == OFFSET
        batch = next(iter(trainer.train_loader))
        x, targets = trainer.prepare_batch(batch)
        polygons = [p.to(x.device) for p in batch["polygons"]]
        args = (polygons, batch["classes"], batch["difficult"], len(trainer.classes), tuple(x.shape[-2:]),
                trainer.cfg.targets)
        expected = encode_targets(*args, grid_offset=OFFSET)  # type: ignore[arg-type]
        original = encode_targets(*args)  # type: ignore[arg-type]
        for key in ("ind", "reg", "hm"):
            torch.testing.assert_close(targets[key], expected[key])
        assert not torch.equal(targets["reg"], original["reg"])
    finally:
        trainer.close()
